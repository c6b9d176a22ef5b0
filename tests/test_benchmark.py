"""The benchmark tool runs end to end and reports what it measured."""

import json

import pytest
import torch

from slak_mm.analysis.benchmark import (
    MODEL_NAMES,
    SLAK_T_STAGES,
    build_model,
    format_compile_table,
    format_rate_table,
    format_table,
    gemm_step,
    measure_train_memory,
    run_benchmark,
)
from slak_mm.analysis.complexity import count_complexity

from .tool_utils import load_tool


def test_benchmark_tool_writes_tables_and_json(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    load_tool('benchmark').main(
        [
            '--sizes', '64',
            '--batches', '1',
            '--warmup', '0',
            '--repeats', '1',
            '--threads', '1',
            '--no-memory',
            '--components',
            '--out', str(out),
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert [r['model'] for r in report['results']] == list(MODEL_NAMES)
    for entry in report['results']:
        assert entry['eval_images_per_s'] > 0
        assert ('train_images_per_s' in entry) == (
            entry['model'] != 'slak_t_deploy'
        )
    reference = report['results'][2]
    assert '| slak_t_reference | 64² x1 |' in printed
    assert f'| {reference["eval_images_per_s"]:.2f} | 1.00 |' in printed
    components = report['components']
    assert len(components) == 2 * len(SLAK_T_STAGES)
    assert {c['component'] for c in components} == {'large_kernel', 'mlp'}
    assert [c['map'] for c in components[::2]] == [16, 8, 4, 2]
    for entry in components:
        for key in ('ref_eval_ms', 'default_eval_ms', 'ref_train_ms'):
            assert entry[key] > 0
    assert report['component_table'] in printed


def test_table_ratios():
    report = dict(
        results=[
            dict(model='slak_t', size=8, batch=1, eval_images_per_s=6.0),
            dict(
                model='slak_t_reference', size=8, batch=1,
                eval_images_per_s=2.0,
            ),
            dict(model='convnext_t', size=8, batch=1, eval_images_per_s=12.0),
        ]
    )  # fmt: skip
    table = format_table(report)
    assert '| slak_t | 8² x1 | 6.00 | 3.00 | 0.50 | - | - | - | - |' in table


def test_train_memory_is_measured_in_a_subprocess():
    mib = measure_train_memory('slak_t', 64, 1, 'cpu', 1)
    # Gradients and AdamW state of SLaK-T alone take 3 x 190 MiB.
    assert mib > 300


def test_sizes_and_batches_must_pair(capsys):
    # A usage error of the tool (exit status 2), a ValueError of the library.
    with pytest.raises(SystemExit) as exited:
        load_tool('benchmark').main(['--sizes', '64', '64', '--batches', '1'])
    assert exited.value.code == 2
    assert 'batch size per input size' in capsys.readouterr().err
    with pytest.raises(ValueError, match='batch size per input size'):
        run_benchmark(sizes=[64, 64], batches=[1], models=['slak_t'])


def bf16_gemm_note(report):
    return 'No bf16 rows: oneDNN runs no native bf16 product' in (
        report.get('rate_table', '')
    )


@pytest.mark.cpu_capability
def test_benchmark_bf16_reports_ratio_and_output_error(tmp_path, capsys):
    """bf16 rows on every CPU; the bf16 GEMM reference only where oneDNN
    runs a native bf16 product (AVX512-BF16 or AMX)."""
    from slak_mm.models.backends import torch_private

    native_bf16 = torch_private.onednn_supports(torch.bfloat16)
    out = tmp_path / 'bench.json'
    load_tool('benchmark').main(
        [
            '--sizes', '64',
            '--batches', '1',
            '--warmup', '0',
            '--repeats', '1',
            '--threads', '1',
            '--no-memory',
            '--models', 'slak_t', 'convnext_t',
            '--dtype', 'fp32', 'bf16',
            '--out', str(out),
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report['dtypes'] == ['fp32', 'bf16']
    keys = [(r['model'], r['dtype']) for r in report['results']]
    assert keys == [
        ('slak_t', 'fp32'),
        ('convnext_t', 'fp32'),
        ('slak_t', 'bf16'),
        ('convnext_t', 'bf16'),
    ]
    for entry in report['results']:
        assert entry['eval_images_per_s'] > 0
        assert entry['train_images_per_s'] > 0
        # bf16 outputs differ from fp32 ones, but by bf16 rounding only.
        if entry['dtype'] == 'bf16':
            assert 1e-5 < entry['output_rel_error'] < 5e-2
        else:
            assert 'output_rel_error' not in entry
    slak_bf16 = report['results'][2]
    slak_fp32 = report['results'][0]
    ratio = slak_bf16['eval_images_per_s'] / slak_fp32['eval_images_per_s']
    eval_rate = slak_bf16['eval_images_per_s']
    row = f'| slak_t | 64² x1 | bf16 | {eval_rate:.2f} | {ratio:.2f} |'
    assert row in printed
    assert report['dtype_table'] in printed
    assert '| slak_t | 64² x1 | 1' not in report['dtype_table']

    # The GEMM reference ran once per natively supported dtype in the
    # same rounds, and the rate table puts each model's eval GFLOP/s
    # against it; a bf16 without one is named below the table.
    referenced = ['fp32', 'bf16'] if native_bf16 else ['fp32']
    assert [g['dtype'] for g in report['gemm']] == referenced
    assert all(g['side'] == 2048 for g in report['gemm'])
    assert report['gemm_unsupported_dtypes'] == (
        [] if native_bf16 else ['bf16']
    )
    assert bf16_gemm_note(report) == (not native_bf16)
    gemm = {g['dtype']: g['gflops'] for g in report['gemm']}
    assert all(rate > 1 for rate in gemm.values())
    slak = build_model('slak_t')
    slak.eval()
    macs = count_complexity(slak, (3, 64, 64)).total('macs')
    assert slak_fp32['gflop_per_image'] == pytest.approx(2 * macs / 1e9)
    assert slak_bf16['gflop_per_image'] == slak_fp32['gflop_per_image']
    assert report['rate_table'] in printed
    for entry, dtype in ((slak_fp32, 'fp32'), (slak_bf16, 'bf16')):
        rate = entry['gflop_per_image'] * entry['eval_images_per_s']
        row_start = f'| slak_t | 64² x1 | {dtype} |'
        if dtype not in gemm:
            assert row_start not in report['rate_table']
            continue
        row = (
            f'{row_start} {entry["gflop_per_image"]:.2f} '
            f'| {rate:.1f} | {gemm[dtype]:.1f} | {rate / gemm[dtype]:.0%} |'
        )
        assert row in report['rate_table']


def test_bf16_rows_without_a_native_bf16_product(monkeypatch):
    """As on an AVX2-only CPU (oneDNN reports no bf16, whatever this CPU
    has): the bf16 rows still come out, with their output error, and
    only the bf16 GEMM reference and its rate-table rows are left out."""
    from slak_mm.analysis.benchmark import benchmark_report
    from slak_mm.models.backends import torch_private

    monkeypatch.setattr(
        torch_private, 'onednn_supports', lambda dtype: dtype == torch.float32
    )
    logged = []
    report = benchmark_report(
        sizes=[64], batches=[1], models=['slak_t'], threads=1, warmup=0,
        repeats=1, memory=False, dtypes=['fp32', 'bf16'], log=logged.append,
    )  # fmt: skip
    assert [(r['model'], r['dtype']) for r in report['results']] == [
        ('slak_t', 'fp32'),
        ('slak_t', 'bf16'),
    ]
    bf16 = report['results'][1]
    assert bf16['eval_images_per_s'] > 0 and bf16['train_images_per_s'] > 0
    assert 1e-5 < bf16['output_rel_error'] < 5e-2
    assert '| slak_t | 64² x1 | bf16 |' in report['dtype_table']
    assert [g['dtype'] for g in report['gemm']] == ['fp32']
    assert report['gemm_unsupported_dtypes'] == ['bf16']
    assert '| slak_t | 64² x1 | fp32 |' in report['rate_table']
    assert '| slak_t | 64² x1 | bf16 |' not in report['rate_table']
    assert bf16_gemm_note(report)
    assert (
        'no bf16 GEMM reference: oneDNN runs no native bf16 product on '
        'this CPU'
    ) in logged


def test_benchmark_without_gemm_reference(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    load_tool('benchmark').main(
        [
            '--sizes', '64', '--batches', '1', '--warmup', '0',
            '--repeats', '1', '--threads', '1', '--no-memory',
            '--models', 'convnext_t', '--no-gemm', '--out', str(out),
        ]
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert report['gemm'] == []
    assert 'rate_table' not in report
    assert 'GEMM' not in capsys.readouterr().out
    assert 'gflop_per_image' not in report['results'][0]


def test_rate_table_against_the_same_dtype_and_size():
    report = dict(
        results=[
            dict(
                model='slak_t', size=8, batch=2, dtype='fp32',
                eval_images_per_s=4.0, gflop_per_image=10.0,
            ),
            dict(
                model='slak_t', size=8, batch=2, dtype='bf16',
                eval_images_per_s=6.0, gflop_per_image=10.0,
            ),
            dict(
                model='slak_t', size=16, batch=1, dtype='fp32',
                eval_images_per_s=1.0, gflop_per_image=40.0,
            ),
        ],
        gemm=[
            dict(size=8, dtype='fp32', gflops=50.0),
            dict(size=8, dtype='bf16', gflops=100.0),
            dict(size=16, dtype='fp32', gflops=80.0),
        ],
    )  # fmt: skip
    rows = format_rate_table(report).splitlines()[2:]
    assert rows == [
        '| slak_t | 8² x2 | fp32 | 10.00 | 40.0 | 50.0 | 80% |',
        '| slak_t | 8² x2 | bf16 | 10.00 | 60.0 | 100.0 | 60% |',
        '| slak_t | 16² x1 | fp32 | 40.00 | 40.0 | 80.0 | 50% |',
    ]


def test_gemm_reference_needs_native_onednn_and_cpu(monkeypatch):
    from slak_mm.models.backends import torch_private

    product = gemm_step(8, 'fp32')()
    assert product.shape == (8, 8)
    monkeypatch.setattr(torch_private, 'onednn_supports', lambda dtype: False)
    with pytest.raises(RuntimeError, match='native bf16 product.*--no-gemm'):
        gemm_step(8, 'bf16')
    with pytest.raises(ValueError, match="CPU only, got device 'cuda'"):
        run_benchmark(
            sizes=[64], batches=[1], models=['slak_t'], device='cuda'
        )


def test_compile_table_compares_with_eager_of_the_same_run():
    report = dict(
        results=[
            dict(model='slak_t', size=8, batch=2, dtype='fp32',
                 eval_images_per_s=4.0, train_images_per_s=1.0),
            dict(model='slak_t+compile', size=8, batch=2, dtype='fp32',
                 eval_images_per_s=5.0, train_images_per_s=1.5,
                 eval_first_call_s=12.25, train_first_call_s=30.0),
        ]
    )  # fmt: skip
    table = format_compile_table(report)
    assert '| slak_t+compile | fp32 | 8² x2 | 1.25 | 12.2 | 1.50 | 30.0 |' in (
        table
    )
    assert '| slak_t |' not in table


def test_benchmark_times_compiled_models(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    load_tool('benchmark').main(
        [
            '--models', 'slak_t',
            '--sizes', '64',
            '--batches', '2',
            '--warmup', '1',
            '--repeats', '1',
            '--threads', '2',
            '--no-memory',
            '--no-gemm',
            '--compile',
            '--out', str(out),
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    compiled = next(
        r for r in report['results'] if r['model'] == 'slak_t+compile'
    )
    for mode in ('eval', 'train'):
        assert compiled[f'{mode}_images_per_s'] > 0
        assert compiled[f'{mode}_first_call_s'] > 0
    assert report['compile_table'] in printed
    assert '| slak_t+compile | fp32 | 64² x2 |' in printed
