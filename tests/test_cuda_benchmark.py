"""The CUDA benchmark's code path, dry-run on CPU (no timing asserted).

The Triton paths run under Triton's interpreter here, on tiny shapes.
"""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from slak_mm.analysis import cuda_benchmark

from .helpers import REPO
from .tool_utils import load_tool, tool_path

# One tile per map: fewer interpreted programs.
INTERPRETER_TEST_BLOCKS = dict(BLOCK_H=8, BLOCK_W=8, BLOCK_C=8)


def test_arguments():
    tool = load_tool('benchmark_cuda')
    args = tool.parse_args([])
    assert args.sizes == [224, 512] and args.batches == [64, 16]
    assert args.precisions == ['bf16', 'fp32']
    assert args.device == 'cuda'
    assert args.models == list(cuda_benchmark.BACKBONES)
    assert args.backends == ['triton', 'native', 'reference']
    with pytest.raises(SystemExit):
        tool.parse_args(['--backends', 'cudnn'])
    with pytest.raises(SystemExit):
        tool.parse_args(['--sizes', '224', '--batches', '1', '2'])
    with pytest.raises(SystemExit):
        tool.parse_args(['--precisions', 'fp16'])


def test_cli_writes_the_report(tmp_path):
    tool = load_tool('benchmark_cuda')
    out = tmp_path / 'bench.json'
    tool.main(
        [
            '--device',
            'cpu',
            '--skip-components',
            '--skip-backbones',
            '--out',
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    assert report['environment']['device'] == 'cpu'
    assert report['args']['sizes'] == [224, 512]


def test_component_dry_run(interpreter):
    results = cuda_benchmark.run_component_benchmark(
        sizes=[32],
        batches=[1],
        precisions=['fp32', 'bf16'],
        stages=((7, 8),),
        device='cpu',
        warmup=0,
        repeats=1,
        log=lambda message: None,
    )
    assert [(r['precision'], r['backend']) for r in results] == [
        (precision, backend)
        for precision in ('fp32', 'bf16')
        for backend in ('triton', 'native', 'reference')
    ]
    for r in results:
        assert r['map'] == 8 and r['eval_ms'] > 0 and r['train_ms'] > 0
        assert r['train_peak_mib'] is None  # CUDA only
    table = cuda_benchmark.format_component_table(results)
    assert table.count('| 32² x1 | 0 | 8 | 8 | 7 |') == 4
    assert 'Peak train memory' in table


def test_triton_bound():
    """Per launch, the longer of its issue time (multiply-adds at the
    peak over the instructions per FFMA) and its HBM time (two maps);
    the launches add up."""
    mix = dict(fp32=dict(forward=2.0, strip_forward=1.0, weight_grad=3.0))

    def bound(mode):
        return cuda_benchmark.triton_bound_ms(
            batch=1,
            side=1,
            channels=1000,
            kernel=13,
            mode=mode,
            precision='fp32',
            peak_tflops=1.0,
            bandwidth_tbs=2.0,
            instructions_per_ffma=mix,
        )

    # 1x1 map: every kernel cropped to one tap (so no sliding window);
    # maps of 4 kB, 4 ns per
    # launch at 2 TB/s. Eval: one launch of 2 taps, 2 x 1000 x 2 x 2 flop
    # slots = 8 ns.
    assert bound('eval') == pytest.approx(8e-9 * 1e3)
    # Train: per conv (one tap) two forward launches (issue 4 ns, HBM 4 ns)
    # and a weight gradient (one block of 8 taps: issue 48 ns), three
    # convs.
    assert bound('train') == pytest.approx(3 * (2 * 4e-9 + 48e-9) * 1e3)


def test_triton_bound_issue_mix_is_not_the_flop_peak():
    """At SLaK-T's stage 0 (512^2 x16, bf16) the bound is set by the
    kernels' instruction mix, 1.6 times the FLOPs-over-peak time (the
    forward's tap loop and the zero taps of the windows and tap blocks
    included)."""
    kwargs = dict(
        batch=16, side=128, channels=124, kernel=51, mode='train',
        peak_tflops=67.0, bandwidth_tbs=4.8,
    )  # fmt: skip
    flat = dict(bf16=dict(forward=1.0, strip_forward=1.0, weight_grad=1.0))
    mixed = cuda_benchmark.triton_bound_ms(precision='bf16', **kwargs)
    peak = cuda_benchmark.triton_bound_ms(
        precision='bf16', instructions_per_ffma=flat, **kwargs
    )
    assert mixed > 1.5 * peak


def test_triton_bound_counts_the_sliding_windows_zero_taps():
    """Long strips run the sliding-window forward: (K + 7) / K of their
    multiply-adds at its mix; the small kernel the tap loop."""
    mix = dict(fp32=dict(forward=0.0, strip_forward=1.0, weight_grad=0.0))
    bound = cuda_benchmark.triton_bound_ms(
        batch=1, side=64, channels=1, kernel=51, mode='train',
        precision='fp32', peak_tflops=1.0, bandwidth_tbs=1e9,
        instructions_per_ffma=mix,
    )  # fmt: skip
    # Two strips (51 x 5 and 5 x 51), forward and input gradient each.
    multiply_adds = 64 * 64 * 51 * 5 * (51 + 7) / 51
    assert bound == pytest.approx(2 * 2 * 2 * multiply_adds / 1e12 * 1e3)


def test_triton_bound_eval_runs_two_sliding_windows():
    """Eval with long strips: two sliding windows, each at its mix with
    its window's zero taps, the first writing an fp32 sum of the padded
    channels and the second reading it (HBM time counted with that sum);
    short kernels keep one tap-loop pass."""
    mix = dict(
        fp32=dict(
            forward=100.0, strip_forward=1.0, strip_accumulate=2.0,
            weight_grad=0.0,
        )
    )  # fmt: skip
    kwargs = dict(
        batch=1, side=64, channels=100, kernel=51, mode='eval',
        precision='fp32', peak_tflops=1.0, instructions_per_ffma=mix,
    )  # fmt: skip
    issue_bound = cuda_benchmark.triton_bound_ms(bandwidth_tbs=1e9, **kwargs)
    multiply_adds = 64 * 64 * 100 * 51 * 5 * (51 + 7) / 51
    assert issue_bound == pytest.approx(
        2 * (1.0 + 2.0) * multiply_adds / 1e12 * 1e3
    )
    memory_bound = cuda_benchmark.triton_bound_ms(bandwidth_tbs=1e-9, **kwargs)
    map_bytes = 64 * 64 * 100 * 4
    sum_bytes = 64 * 64 * 128 * 4  # 100 channels padded to 128
    moved = (map_bytes + sum_bytes) + (2 * map_bytes + sum_bytes)
    assert memory_bound == pytest.approx(moved / 1e3 * 1e3)
    kwargs.update(side=4)  # cropped to 7 x 5 and 5 x 7: the tap loop
    tap_loop = cuda_benchmark.triton_bound_ms(bandwidth_tbs=1e9, **kwargs)
    assert tap_loop == pytest.approx(
        2 * 100.0 * 4 * 4 * 100 * 2 * 35 / 1e12 * 1e3
    )


def test_triton_bound_counts_the_weight_gradients_tap_blocks():
    """The weight gradient computes blocks of 8 taps along its walk (the
    longer axis): 56 x 5 multiply-adds per position for 51 x 5 and 5 x
    51, 8 x 5 for 5 x 5."""
    mix = dict(fp32=dict(forward=0.0, strip_forward=0.0, weight_grad=1.0))
    bound = cuda_benchmark.triton_bound_ms(
        batch=1, side=64, channels=1, kernel=51, mode='train',
        precision='fp32', peak_tflops=1.0, bandwidth_tbs=1e9,
        instructions_per_ffma=mix,
    )  # fmt: skip
    multiply_adds = 64 * 64 * (56 * 5 * 2 + 8 * 5)
    assert bound == pytest.approx(2 * multiply_adds / 1e12 * 1e3)


def test_backbone_dry_run(interpreter):
    results = cuda_benchmark.run_backbone_benchmark(
        sizes=[32],
        batches=[2],
        precisions=['fp32'],
        models=['slak_t_triton', 'slak_t_native', 'slak_t_reference'],
        slak_kwargs=dict(
            arch=dict(depths=[1, 1, 1, 1], channels=[8, 8, 8, 8]),
            kernel_sizes=[5, 3, 3, 3],
            small_kernel=3,
        ),
        device='cpu',
        warmup=0,
        repeats=1,
        log=lambda message: None,
    )
    assert [r['model'] for r in results] == [
        'slak_t_triton',
        'slak_t_native',
        'slak_t_reference',
    ]
    table = cuda_benchmark.format_backbone_table(results)
    # Without ConvNeXt-T the ratio columns are empty, not invented.
    assert '| slak_t_triton | 32² x2 | fp32 |' in table
    assert table.splitlines()[2].split('|')[5].strip() == '-'


def test_gpu_scripts_parse():
    for script in ('gpu_check.sh', 'download_gpu_wheels.sh'):
        subprocess.run(['bash', '-n', tool_path(script)], check=True)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason='would run the whole GPU check'
)
def test_gpu_check_stops_cleanly_without_a_gpu(tmp_path):
    result = subprocess.run(
        [
            'bash',
            tool_path('gpu_check.sh'),
            str(tmp_path / 'no_wheels'),
            str(tmp_path / 'out'),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHON=sys.executable),
    )
    assert result.returncode == 1
    assert '== environment' in result.stdout
    assert 'no CUDA device' in result.stderr


def test_component_table_ratios():
    results = [
        dict(
            size=224,
            batch=64,
            stage=0,
            map=56,
            channels=124,
            kernel=51,
            precision='bf16',
            backend=backend,
            bound_eval_ms=0.1,
            bound_train_ms=0.5,
            eval_ms=eval_ms,
            train_ms=train_ms,
            train_peak_mib=mib,
        )
        for backend, eval_ms, train_ms, mib in (
            ('triton', 1.0, 3.0, 100.0),
            ('native', 2.0, 9.0, 120.0),
            ('reference', 4.0, 20.0, 200.0),
        )
    ]
    lines = cuda_benchmark.format_component_table(results).splitlines()
    assert '| native (cuDNN) ms | reference ms |' in lines[0]
    # triton, native, reference ms, bound, native / bound, x native,
    # x reference
    assert lines[2].endswith(
        '| eval | 1.00 | 2.00 | 4.00 | 0.100 | 20.0 | 2.00 | 4.00 |'
    )
    assert lines[3].endswith(
        '| train | 3.00 | 9.00 | 20.00 | 0.500 | 18.0 | 3.00 | 6.67 |'
    )
    assert lines[-1] == '| 224² x64 | 0 | bf16 | 100 | 120 | 200 |'


def test_components_and_backbones_run_on_their_backends():
    assert {
        backend: cuda_benchmark.backend_of(backend)
        for backend in cuda_benchmark.LARGE_KERNEL_BACKENDS
    } == dict(triton='triton', native='native', reference='reference')
    small = dict(
        arch=dict(depths=[1, 1, 1, 1], channels=[8, 8, 8, 8]),
        kernel_sizes=[5, 3, 3, 3],
        small_kernel=3,
    )
    for name, backend in (
        ('slak_t_triton', 'triton'),
        ('slak_t_native', 'native'),
        ('slak_t_reference', 'reference'),
    ):
        model = cuda_benchmark.build_backbone(name, small)
        assert {
            m.backend for m in model.modules() if hasattr(m, 'backend')
        } == {backend}
    with pytest.raises(ValueError, match="unknown backend 'cutlass'"):
        cuda_benchmark.backend_of('cutlass')


def test_gpu_check_runs_every_cuda_test_file():
    """Each test file with ``cuda``-marked tests is named in the GPU check
    (it lists files: collecting all of tests/ needs the mm* packages)."""
    with open(tool_path('gpu_check.sh')) as f:
        script = f.read()
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    marked = []
    for name in sorted(os.listdir(tests_dir)):
        if not (name.startswith('test_') and name.endswith('.py')):
            continue
        with open(os.path.join(tests_dir, name)) as f:
            lines = [line.strip() for line in f]
        if '@pytest.mark.cuda' in lines:
            marked.append(name)
    assert 'test_triton_backend.py' in marked
    for name in marked:
        assert f'tests/{name}' in script, name


def test_docs_bound_table_is_the_models():
    """docs/gpu.md's bound table at SLaK-T's stages (512^2 x16) gives what
    ``triton_bound_ms`` computes with the default rates."""
    text = open(os.path.join(REPO, 'docs', 'gpu.md')).read()
    rows = re.findall(
        r'^  \| (\d) \| (\d+)² \| (\d+) \| (\d+) \| (bf16|fp32) \| '
        r'([\d.]+) \| ([\d.]+) \|',
        text,
        flags=re.M,
    )
    assert len(rows) == 8
    for stage, side, channels, kernel, precision, eval_ms, train_ms in rows:
        kwargs = dict(
            batch=16,
            side=int(side),
            channels=int(channels),
            kernel=int(kernel),
            precision=precision,
            peak_tflops=cuda_benchmark.DEFAULT_PEAK_TFLOPS,
            bandwidth_tbs=cuda_benchmark.DEFAULT_BANDWIDTH_TBS,
        )
        for mode, documented in (('eval', eval_ms), ('train', train_ms)):
            bound = cuda_benchmark.triton_bound_ms(mode=mode, **kwargs)
            assert f'{bound:.3f}' == documented, (stage, precision, mode)
