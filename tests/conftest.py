"""Fixtures that set up state for the tests (the seed, Triton's
interpreter, fp32 without TF32) and pytest's report header. Plain helpers
live in ``tests/helpers.py``."""

import pytest
import torch

from slak_mm.ops import triton_dwconv


def pytest_report_header(config):
    """The capabilities the cpu_capability tests see (capped or not)."""
    from slak_mm.models.backends import torch_private

    return (
        f'CPU capability: ATen {torch.backends.cpu.get_cpu_capability()}, '
        f'oneDNN bf16 {torch_private.onednn_supports(torch.bfloat16)}, '
        f'oneDNN fp16 {torch_private.onednn_supports(torch.float16)}'
    )


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same global torch seed."""
    torch.manual_seed(0)


@pytest.fixture
def interpreter(request, monkeypatch):
    """Triton kernels run under Triton's interpreter (``TRITON_INTERPRET=1``)
    on CPU tensors; skips without Triton. A test module's
    ``INTERPRETER_TEST_BLOCKS`` (a dict of tile sizes), when it has one,
    replaces the interpreter's default tiles: fewer interpreted programs
    (the weight gradient's columns take ``BLOCK_W`` positions)."""
    if triton_dwconv.triton is None:
        pytest.skip('Triton is not installed')
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    blocks = getattr(request.module, 'INTERPRETER_TEST_BLOCKS', None)
    if blocks is not None:
        monkeypatch.setattr(triton_dwconv, 'INTERPRETER_BLOCKS', blocks)
        monkeypatch.setattr(
            triton_dwconv,
            'INTERPRETER_WEIGHT_GRAD_BLOCKS',
            dict(BLOCK_X=blocks['BLOCK_W'], BLOCK_C=blocks['BLOCK_C']),
        )


@pytest.fixture
def exact_fp32(monkeypatch):
    """fp32 references without TF32 (cuDNN allows it by default)."""
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    monkeypatch.setattr(torch.backends.cuda.matmul, 'allow_tf32', False)
