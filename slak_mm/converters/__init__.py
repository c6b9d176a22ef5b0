"""Turning checkpoints of other forms into slak_mm (OpenMMLab 2.x) files:
the library behind ``tools/model_converters/``.

:mod:`~slak_mm.converters.release` converts the released SLaK checkpoints
(ImageNet ``{'model': ...}`` files and mmseg 0.x / mmdet 2.x downstream
files); :mod:`~slak_mm.converters.deploy` re-parameterizes a trained
checkpoint into deploy form. Loading a checkpoint into a model, with its
strict shape checks, is :mod:`slak_mm.models.checkpoint`.
:mod:`~slak_mm.converters.onnx` exports a trained model to ONNX
(``tools/deployment/export_onnx.py``) and with ``torch.export``.
"""

from .deploy import (
    check_finite,
    deploy_checkpoint,
    make_test_batch,
    relative_difference,
    switch_backbone_to_deploy,
)
from .onnx import (
    StaticAdaptiveAvgPool2d,
    export_onnx,
    export_program,
    static_adaptive_pools,
)
from .release import (
    convert_release_backbone,
    convert_release_classifier,
    convert_release_downstream,
    infer_release_config,
)

__all__ = [
    'check_finite',
    'convert_release_backbone',
    'convert_release_classifier',
    'convert_release_downstream',
    'deploy_checkpoint',
    'export_onnx',
    'export_program',
    'infer_release_config',
    'make_test_batch',
    'relative_difference',
    'static_adaptive_pools',
    'StaticAdaptiveAvgPool2d',
    'switch_backbone_to_deploy',
]
