"""The ``'triton'`` backend where its kernels cannot compile or launch.

Without a GPU: the kernels run under Triton's interpreter on CPU tensors,
and the launch step (the interpreter's ``InterpretedFunction.run``, what
``kernel[grid](...)`` calls) is substituted to raise the errors Triton
raises on a GPU or Triton version it cannot serve. ``'auto'``'s instance
(``falls_back=True``) must then give ``'native'``'s results for that case
with one warning per cause; the explicit ``'triton'`` must raise.
"""

import ast
import os
import re
import warnings

import pytest
import torch

from slak_mm.models import SLaK
from slak_mm.models import slak as slak_module
from slak_mm.models.backends import (
    TritonBackend,
    TritonFallbackWarning,
    base,
    get_backend,
    use_backend,
)
from slak_mm.models.backends.triton import is_compile_or_launch_failure
from slak_mm.ops import triton_dwconv

from .helpers import TINY_ARCH, randomize_batch_norms

# One tile per map and channel block: fewer interpreted programs.
INTERPRETER_TEST_BLOCKS = dict(BLOCK_H=8, BLOCK_W=8, BLOCK_C=64)

FORWARD = 'forward'
WEIGHT_GRAD = 'weight_grad'


def compilation_error():
    """What Triton raises when a kernel does not compile for the target
    (e.g. a bf16 conversion an old architecture lacks)."""
    from triton.compiler.errors import CompilationError

    return CompilationError(
        None, ast.Name('x'), 'bf16 is not supported on compute capability 75'
    )


def out_of_resources():
    from triton.runtime.errors import OutOfResources

    return OutOfResources(232448, 101376, 'shared memory')


def launch_error():
    """The driver's error when a compiled kernel does not launch."""
    return RuntimeError('Triton Error [CUDA]: device kernel image is invalid')


def raised_in_triton_code(error_type, message):
    """An error as raised in Triton's own code (e.g. building its launcher
    without a C compiler): a ``raise`` run from a file name inside the
    triton package."""
    path = os.path.join(
        os.path.dirname(triton_dwconv.triton.__file__), 'runtime', 'build.py'
    )
    namespace = dict(error_type=error_type, message=message)
    exec(
        compile('def fail():\n    raise error_type(message)\n', path, 'exec'),
        namespace,
    )
    try:
        namespace['fail']()
    except error_type as error:
        return error


def error_in_triton_code():
    return raised_in_triton_code(
        RuntimeError,
        'Failed to find C compiler. Please specify via CC environment '
        'variable.',
    )


FAILURES = {
    'compile error': (compilation_error, 'CompilationError: bf16 is not'),
    'out of resources': (out_of_resources, 'OutOfResources: out of resource'),
    'launch error': (launch_error, 'RuntimeError: Triton Error [CUDA]'),
    'error in triton code': (
        error_in_triton_code,
        'RuntimeError: Failed to find C compiler',
    ),
}


class LaunchFailures:
    """Substitutes the interpreter's launch step: a launch of a kernel
    whose name contains ``kernel`` on a map of a dtype in ``dtypes`` raises
    ``make_error()``; other launches run. Counts the launches."""

    def __init__(self, monkeypatch, make_error, kernel=FORWARD, dtypes=None):
        from triton.runtime.interpreter import InterpretedFunction

        self.make_error = make_error
        self.kernel = kernel
        self.dtypes = dtypes
        self.launches = []
        real_run = InterpretedFunction.run

        def run(function, *args, **kwargs):
            dtype = args[0].dtype  # the (padded) map
            self.launches.append((function.__name__, dtype))
            if self.kernel in function.__name__ and (
                self.dtypes is None or dtype in self.dtypes
            ):
                raise self.make_error()
            return real_run(function, *args, **kwargs)

        monkeypatch.setattr(InterpretedFunction, 'run', run)


@pytest.fixture
def auto_triton(interpreter):
    """A fresh instance as ``'auto'`` gets it (no fallback recorded yet)."""
    return TritonBackend().for_auto()


@pytest.fixture
def explicit_triton(interpreter):
    """A fresh instance as ``backend='triton'`` gets it (fresh: the
    registered one may have run a backward in another test)."""
    return TritonBackend()


def native():
    return get_backend('native', 'cpu')


def fallback_warnings(record):
    return [w for w in record if issubclass(w.category, TritonFallbackWarning)]


def test_auto_gets_the_instance_that_falls_back(monkeypatch):
    """With CUDA reported present and Triton importable, 'auto' and
    'triton' both run the Triton backend; only 'auto''s falls back."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(triton_dwconv, 'triton', object())
    base._resolve.cache_clear()
    try:
        auto, explicit = (
            get_backend('auto', 'cuda'),
            get_backend('triton', 'cuda'),
        )
        assert auto.name == explicit.name == 'triton'
        assert auto.falls_back and not explicit.falls_back
        assert get_backend('auto', 'cuda') is auto
    finally:
        base._resolve.cache_clear()


@pytest.mark.parametrize('failure', list(FAILURES))
def test_forward_failure_falls_back_once_or_raises(
    auto_triton, explicit_triton, monkeypatch, failure
):
    make_error, cause = FAILURES[failure]
    launches = LaunchFailures(monkeypatch, make_error)
    x = torch.randn(2, 8, 9, 7).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(8, 1, 11, 3), torch.randn(8)
    expected = native().depthwise_conv(x, weight, bias)

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        first = auto_triton.depthwise_conv(x, weight, bias)
        tried = len(launches.launches)
        second = auto_triton.depthwise_conv(x, weight, bias)
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert tried == 1 and len(launches.launches) == 1  # not tried again
    (warning,) = fallback_warnings(record)
    message = str(warning.message)
    for part in (cause, 'torch.float32', 'cpu', "backend='triton' raises"):
        assert part in message
    assert 'TritonFallbackWarning' in message  # how to silence it

    pattern = f"backend='triton'.*{re.escape(cause)}"
    with pytest.raises(RuntimeError, match=pattern) as info:
        explicit_triton.depthwise_conv(x, weight, bias)
    assert is_compile_or_launch_failure(info.value.__cause__)


def test_only_the_failing_dtype_falls_back(auto_triton, monkeypatch):
    """bf16 kernels that do not compile (as on a GPU without bf16) send
    only the bf16 convs to the standard conv; fp32 stays on Triton."""
    launches = LaunchFailures(
        monkeypatch, compilation_error, dtypes=(torch.bfloat16,)
    )
    x = torch.randn(1, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(8, 1, 5, 5)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        with torch.autocast('cpu', torch.bfloat16):
            bf16_out = auto_triton.depthwise_conv(x, weight)
            bf16_expected = native().depthwise_conv(x, weight)
        auto_triton.depthwise_conv(x, weight)
    assert bf16_out.dtype == torch.bfloat16
    assert torch.equal(bf16_out, bf16_expected)
    (warning,) = fallback_warnings(record)
    assert 'torch.bfloat16' in str(warning.message)
    assert set(auto_triton.failed_cases) == {
        (x.device, torch.bfloat16, 'conv')
    }
    assert launches.launches[-1][1] == torch.float32  # ran on Triton


def test_pair_failure_falls_back_for_the_pair_only(auto_triton, monkeypatch):
    """The eval pair pass (two strips in one kernel) fails; the sum is
    'native''s, and single convs keep running on Triton."""
    LaunchFailures(monkeypatch, out_of_resources)
    x = torch.randn(1, 8, 7, 9).contiguous(memory_format=torch.channels_last)
    kernels = [
        (torch.randn(8, 1, 13, 3), torch.randn(8)),
        (torch.randn(8, 1, 3, 13), torch.randn(8)),
    ]
    with pytest.warns(TritonFallbackWarning, match='pair kernel'):
        out = auto_triton.depthwise_conv_sum(x, kernels)
    assert torch.equal(out, native().depthwise_conv_sum(x, kernels))
    assert list(auto_triton.failed_cases) == [
        (x.device, torch.float32, 'pair')
    ]


def test_one_warning_per_cause(auto_triton, monkeypatch):
    """The same error from another kernel of the same dtype falls back
    without a new warning; from another dtype it warns again."""
    LaunchFailures(monkeypatch, compilation_error)
    x = torch.randn(1, 8, 5, 5)
    weight = torch.randn(8, 1, 3, 3)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        auto_triton.depthwise_conv(x, weight)
        auto_triton.depthwise_conv_sum(x, [(weight, None), (weight, None)])
        assert len(fallback_warnings(record)) == 1
        auto_triton.depthwise_conv(x.half(), weight.half())
    assert len(fallback_warnings(record)) == 2
    assert sorted(kind for _, _, kind in auto_triton.failed_cases) == [
        'conv',
        'conv',
        'pair',
    ]


def conv_and_grads(backend, x, weight, bias):
    leaves = [t.clone().requires_grad_(True) for t in (x, weight, bias)]
    out = backend.depthwise_conv(*leaves)
    # A linear loss: the conv's output gradient does not depend on its
    # output, so gradients from the same conv code are bit-equal.
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), [leaf.grad for leaf in leaves]


def test_backward_failure_takes_native_gradients(
    auto_triton, explicit_triton, monkeypatch
):
    """The weight-gradient kernel fails in the first backward: the
    gradients are 'native''s, the forward stays Triton's, later convs
    that need gradients run as 'native' and inference convs on Triton."""
    launches = LaunchFailures(monkeypatch, out_of_resources, WEIGHT_GRAD)
    x = torch.randn(2, 8, 6, 5).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(8, 1, 7, 3), torch.randn(8)
    expected_out, expected_grads = conv_and_grads(native(), x, weight, bias)

    with pytest.warns(TritonFallbackWarning, match='conv backward kernel'):
        out, grads = conv_and_grads(auto_triton, x, weight, bias)
    torch.testing.assert_close(out, expected_out)
    for grad, expected in zip(grads, expected_grads):
        assert torch.equal(grad, expected)
    assert list(auto_triton.failed_cases) == [
        (x.device, torch.float32, 'conv backward')
    ]

    tried = len(launches.launches)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        out, grads = conv_and_grads(auto_triton, x, weight, bias)
        assert len(launches.launches) == tried  # all 'native' now
        assert torch.equal(out, expected_out)
        with torch.no_grad():
            auto_triton.depthwise_conv(x, weight, bias)
        assert len(launches.launches) == tried + 1  # inference on Triton
    assert not fallback_warnings(record)  # one warning per cause

    with pytest.raises(RuntimeError, match="backend='triton'.*OutOfResources"):
        conv_and_grads(explicit_triton, x, weight, bias)


def test_backward_is_guarded_until_one_ran(auto_triton):
    """After one Triton backward for a device and dtype, convs use the
    op's own backward (no kept output, no guard)."""
    x = torch.randn(1, 8, 5, 5, requires_grad=True)
    weight = torch.randn(8, 1, 3, 3, requires_grad=True)
    first = auto_triton.depthwise_conv(x, weight)
    assert 'Guarded' in type(first.grad_fn).__name__
    first.sum().backward()
    second = auto_triton.depthwise_conv(x, weight)
    assert 'Guarded' not in type(second.grad_fn).__name__


@pytest.mark.parametrize(
    'make_error',
    [
        # E.g. while Triton's autotuner allocates: cuDNN needs memory too.
        lambda: raised_in_triton_code(
            torch.OutOfMemoryError, 'CUDA out of memory'
        ),
        lambda: RuntimeError('an error of slak_mm or torch, not Triton'),
    ],
    ids=['out of memory', 'other error'],
)
def test_other_errors_propagate(auto_triton, monkeypatch, make_error):
    LaunchFailures(monkeypatch, make_error)
    x = torch.randn(1, 8, 5, 5)
    error = make_error()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        with pytest.raises(type(error), match=str(error)):
            auto_triton.depthwise_conv(x, torch.randn(8, 1, 3, 3))
    assert not fallback_warnings(record)
    assert not auto_triton.failed_cases


def test_caller_mistakes_propagate(auto_triton):
    """A weight that does not fit the map is the caller's error: raised as
    the op raises it, nothing falls back."""
    x = torch.randn(1, 8, 5, 5)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        with pytest.raises(ValueError, match='weight must be'):
            auto_triton.depthwise_conv(x, torch.randn(4, 1, 3, 3))
    assert not fallback_warnings(record)
    assert not auto_triton.failed_cases


def test_slak_train_step_on_auto_without_triton_kernels(
    auto_triton, monkeypatch
):
    """A whole SLaK on 'auto' where no Triton kernel launches trains as on
    'native', bit for bit, with one warning."""
    LaunchFailures(monkeypatch, launch_error)
    real_get_backend = slak_module.get_backend
    monkeypatch.setattr(
        slak_module,
        'get_backend',
        lambda name, device: (
            auto_triton if name == 'auto' else real_get_backend(name, device)
        ),
    )
    model = SLaK(arch=TINY_ARCH, out_indices=(0, 1, 2, 3))
    randomize_batch_norms(model)
    images = torch.randn(2, 3, 32, 32)
    results = []
    for name in ('native', 'auto'):
        model.zero_grad(set_to_none=True)
        with (
            use_backend(model, name),
            warnings.catch_warnings(record=True) as record,
        ):
            warnings.simplefilter('always')
            outs = model.train()(images)
            sum(out.sum() for out in outs).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        results.append((outs, grads, fallback_warnings(record)))
    (outs, grads, _), (auto_outs, auto_grads, auto_warnings) = results
    assert len(auto_warnings) == 1
    for out, auto_out in zip(outs, auto_outs):
        assert torch.equal(auto_out, out)
    for grad, auto_grad in zip(grads, auto_grads):
        assert torch.equal(auto_grad, grad)
