"""Checkpoint converters: the logic of ``tools/model_converters/``."""

from .deploy import (
    check_finite,
    deploy_checkpoint,
    make_test_batch,
    relative_difference,
    switch_backbone_to_deploy,
)

__all__ = [
    'check_finite',
    'deploy_checkpoint',
    'make_test_batch',
    'relative_difference',
    'switch_backbone_to_deploy',
]
