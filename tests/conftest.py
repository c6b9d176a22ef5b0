import pytest
import torch

# A narrow SLaK with real large kernels, fast enough for CPU tests.
TINY_ARCH = dict(depths=[1, 1, 2, 1], channels=[8, 16, 24, 32])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomize_batch_norms(model: torch.nn.Module) -> None:
    """Gives every BN non-trivial statistics and affine parameters."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            channels = module.num_features
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
            assert module.weight.shape == (channels,)


def relative_close(actual, expected, rtol=1e-5):
    """Max error relative to the largest magnitude of the expectation."""
    scale = expected.abs().max().clamp_min(1e-12)
    error = (actual.double() - expected.double()).abs().max() / scale
    assert error <= rtol, f'relative error {error:.3g} > {rtol}'


def run_module(module, x, grad_out):
    """Returns the output and the gradients of input and parameters."""
    x = x.clone().requires_grad_(True)
    out = module(x)
    out.backward(grad_out)
    grads = {'input': x.grad}
    grads.update(
        {
            name: p.grad
            for name, p in module.named_parameters()
            if p.requires_grad
        }
    )
    return out, grads


def cpu_backends(include_reference: bool = False):
    """Names of the ``backend`` choices that run on this machine's CPU
    (``'auto'`` included); without ``include_reference`` only those that
    compute their own way rather than running the modules as defined."""
    from slak_mm.models.backends import backend_names, get_backend

    names = []
    for name in backend_names():
        try:
            backend = get_backend(name, 'cpu')
        except (ValueError, RuntimeError):
            continue  # a backend for another device, or not built here
        if backend.device_types is not None and 'cpu' not in (
            backend.device_types
        ):
            # Runs on CPU only on request (GPU kernels under an
            # interpreter, e.g. with TRITON_INTERPRET=1 set): too slow for
            # these tests; tests/test_triton_backend.py covers it.
            continue
        if include_reference or not backend.runs_modules_as_defined:
            names.append(name)
    return names
