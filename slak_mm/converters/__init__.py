"""Turning checkpoints of other forms into slak_mm (OpenMMLab 2.x) files.

:mod:`~slak_mm.converters.release` converts the released SLaK checkpoints
(ImageNet ``{'model': ...}`` files and mmseg 0.x / mmdet 2.x downstream
files). Loading a checkpoint into a model, with its strict shape checks, is
:mod:`slak_mm.models.checkpoint`.
"""

from .release import (
    convert_release_backbone,
    convert_release_classifier,
    convert_release_downstream,
    infer_release_config,
)

__all__ = [
    'convert_release_backbone',
    'convert_release_classifier',
    'convert_release_downstream',
    'infer_release_config',
]
