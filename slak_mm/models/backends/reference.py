"""``'reference'``: the computation as released.

NCHW maps throughout, one ``nn.Conv2d`` + BN per large-kernel branch (the
full kernels, never cropped), ``nn.Linear`` block MLPs. The baseline every
other backend is tested against, and what FLOP counts and deploy checks
run, as the model is defined.
"""

from .base import Backend, register_backend


@register_backend
class ReferenceBackend(Backend):
    name = 'reference'
    runs_modules_as_defined = True
