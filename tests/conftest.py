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


def set_conv_impl(model: torch.nn.Module, conv_impl: str) -> None:
    """Switches every module of ``model`` that has a ``conv_impl``."""
    for module in model.modules():
        if hasattr(module, 'conv_impl'):
            module.conv_impl = conv_impl
