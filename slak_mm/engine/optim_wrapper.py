"""Mixed precision training on CPUs: bf16 autocast in an optimizer wrapper.

mmengine's ``AmpOptimWrapper`` refuses to build without a CUDA, NPU, MLU
or MUSA device. On a CPU, bf16 autocast needs no loss scaling (bf16 keeps
fp32's exponent range), so the wrapper below only enters
``torch.autocast('cpu', dtype=torch.bfloat16)`` around the forward and
loss, as ``AmpOptimWrapper`` does on GPUs; parameters, gradients and
optimizer states stay fp32, so masks and checkpoints are unaffected.
"""

from contextlib import contextmanager

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

_DTYPES = {'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16}


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward runs under CPU bf16 autocast.

    Use it in a config as
    ``optim_wrapper = dict(type='CPUAmpOptimWrapper', optimizer=...)``, or
    pass ``--amp`` to ``tools/train.py`` on a machine without CUDA. SLaK's
    default backend then runs its depthwise convs and block MLPs in bf16 on
    oneDNN (fp32 accumulation); norms run in fp32 as autocast decides.

    Args:
        dtype (str): ``'bfloat16'`` (alias ``'bf16'``), the only dtype CPU
            autocast trains without a loss scaler.
        **kwargs: The arguments of ``OptimWrapper`` (``optimizer``,
            ``accumulative_counts``, ``clip_grad``).
    """

    def __init__(self, dtype: str = 'bfloat16', **kwargs) -> None:
        if dtype not in _DTYPES:
            raise ValueError(
                f'CPUAmpOptimWrapper dtype must be one of {sorted(_DTYPES)}'
                f', got {dtype!r} (fp16 on CPU would need a loss scaler)'
            )
        super().__init__(**kwargs)
        self.cast_dtype = _DTYPES[dtype]

    @contextmanager
    def optim_context(self, model: nn.Module):
        """Gradient accumulation context of ``OptimWrapper`` plus autocast."""
        with (
            super().optim_context(model),
            torch.autocast('cpu', dtype=self.cast_dtype),
        ):
            yield


def use_plain_param_groups(optimizer: torch.optim.Optimizer) -> None:
    """Turns the optimizer's param groups into plain dicts, in place.

    mmengine builds optimizers from configs, which makes every param group
    built by a constructor (``paramwise_cfg``, layer-wise decay) a
    ``ConfigDict``; ``torch.compile`` traces the optimizer step (mmengine's
    ``compile=True`` compiles the whole train step) only over plain dict
    param groups. Values, their order and the optimizer state are kept.
    """
    optimizer.param_groups[:] = [dict(g) for g in optimizer.param_groups]
