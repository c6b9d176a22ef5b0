"""The GPU check: its test list complete and collectable on a machine
without mmcv / mmdet / mmseg / mmpretrain (only torch, Triton, timm and
the wheels of ``tools/misc/download_gpu_wheels.sh``), its environment
report, and a CPU dry run of its Triton kernel check."""

import os
import re
import subprocess
import sys

import pytest

from .helpers import REPO
from .tool_utils import tool_path

TESTS_DIR = os.path.join(REPO, 'tests')


def gpu_check_test_files():
    """The ``CUDA_TESTS`` array of tools/misc/gpu_check.sh."""
    with open(tool_path('gpu_check.sh')) as f:
        script = f.read()
    match = re.search(r'^CUDA_TESTS=\(\n(.*?)^\)', script, re.M | re.S)
    assert match, 'tools/misc/gpu_check.sh has no CUDA_TESTS=( ... ) array'
    return match.group(1).split()


# The marker applied: a decorator, or in a list / assignment of marks.
_CUDA_MARK = re.compile(r'(^\s*@|[\[(,=]\s*)pytest\.mark\.cuda\b', re.M)


def files_with_cuda_tests():
    names = []
    for name in sorted(os.listdir(TESTS_DIR)):
        if name.startswith('test_') and name.endswith('.py'):
            with open(os.path.join(TESTS_DIR, name)) as f:
                if _CUDA_MARK.search(f.read()):
                    names.append(f'tests/{name}')
    return names


def run_python(args, timeout=300):
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_gpu_check_runs_every_file_with_cuda_tests():
    files = gpu_check_test_files()
    assert files == files_with_cuda_tests()
    assert 'tests/test_amp_sparse.py' in files
    assert 'tests/test_cuda_sparse.py' in files


def test_toolkit_blocker_blocks():
    result = run_python(
        ['-c', 'import tests.block_toolkits, mmengine; import mmpretrain']
    )
    assert result.returncode != 0
    assert 'mmpretrain is blocked' in result.stderr


def test_cuda_tests_collect_without_the_toolkits():
    """``pytest -m cuda --collect-only`` on the GPU check's files with
    mmcv, mmdet, mmseg and mmpretrain unimportable."""
    files = gpu_check_test_files()
    result = run_python(
        ['-m', 'pytest', '-p', 'tests.block_toolkits', '-p',
         'no:cacheprovider', '-m', 'cuda', '--collect-only', '-q', *files],
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    collected = [line for line in result.stdout.splitlines() if '::' in line]
    for path in files:
        assert any(line.startswith(path + '::') for line in collected), path
    for node in (
        'tests/test_amp_sparse.py::'
        'test_skipped_amp_step_is_not_a_sparse_step[cuda-fp16]',
        'tests/test_amp_sparse.py::'
        'test_skipped_amp_step_is_not_a_sparse_step[cuda-bf16]',
        'tests/test_cuda_sparse.py::'
        'test_sync_bn_reduction_over_the_nccl_group_matches_batch_norm',
    ):
        assert node in collected, node
    # The CPU emulation is not a cuda test.
    assert not any('[cpu-fp16]' in line for line in collected)


def test_gpu_check_prints_versions_and_the_launcher_toolchain(tmp_path):
    """Versions, the C compiler and Python.h (Triton builds its launcher
    with them) come before the CUDA device check; here, without one, the
    script stops there."""
    import torch

    if torch.cuda.is_available():
        pytest.skip('a CUDA device is visible: the check would run')
    result = subprocess.run(
        ['bash', tool_path('gpu_check.sh'), str(tmp_path / 'wheels'),
         str(tmp_path / 'out')],
        cwd=REPO,
        env=dict(os.environ, PYTHON=sys.executable),
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert 'no CUDA device visible' in result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith('python ') for line in lines)
    assert any(line.startswith('C compiler ') for line in lines)
    assert any(line.startswith('Python.h /') for line in lines)


def test_gpu_check_runs_the_kernel_check_with_tuning_printed():
    with open(tool_path('gpu_check.sh')) as f:
        script = f.read()
    tuning = script.index('export TRITON_PRINT_AUTOTUNING=1')
    check = script.index('-m slak_mm.analysis.triton_check')
    assert tuning < check < script.index('-m pytest')
    assert '"$KERNELS" -ne 0' in script  # its failure fails the check


def test_kernel_check_dry_run(interpreter):
    """The kernel check's code on CPU (interpreted kernels, tiny narrow
    stages): both weight-gradient calls match conv2d_weight, every stage
    times the three Triton kernels and cuDNN's, no memory figure on CPU."""
    import torch

    from slak_mm.analysis import triton_check

    report = triton_check.run(
        torch.device('cpu'),
        torch.float32,
        batch=1,
        size=32,
        warmup=0,
        repeats=1,
        max_channels=4,
    )
    calls = report['weight_grad_calls']['calls']
    assert len(calls) == 2
    assert all(call['max_rel_error'] < 1e-5 for call in calls)
    assert [stage['shape'] for stage in report['stages']] == [
        (1, 4, 8, 8), (1, 4, 4, 4), (1, 4, 2, 2), (1, 4, 1, 1)
    ]  # fmt: skip
    for stage in report['stages']:
        assert set(stage['ms']) == {
            f'{path}_{part}'
            for path in ('triton', 'cudnn')
            for part in ('forward', 'input_grad', 'weight_grad')
        }
    assert report['module_peak_mib'] == dict(triton=None, native=None)
