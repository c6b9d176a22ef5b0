"""Building an mmdet, mmseg or mmpretrain model from a config, and running
its network part (for the analysis, conversion and inference code)."""

from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.registry import MODELS, init_default_scope

from ..utils.checkpoint import check_shapes
from .checkpoint import split_pretrained_entries


def build_model_from_config(
    config: Union[str, Config], cfg_options: Optional[Dict[str, Any]] = None
) -> Tuple[nn.Module, Config]:
    """Builds ``cfg.model`` in the config's ``default_scope``.

    Args:
        config (str | Config): An OpenMMLab 2.x config or its path. Its
            ``custom_imports`` (e.g. ``imports=['slak_mm']``) are imported
            when the file is read.
        cfg_options (dict, optional): Overrides merged into the config, e.g.
            ``{'model.backbone.deploy': True}``.

    Returns:
        tuple[nn.Module, Config]: The model in eval mode (on the CPU, not
        initialised: load a checkpoint into it) and the config.
    """
    cfg = Config.fromfile(config) if isinstance(config, str) else config.copy()
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if 'model' not in cfg:
        raise KeyError(f'{config} has no "model" entry')
    init_default_scope(cfg.get('default_scope', None))
    model_cfg = cfg.model.copy()
    # Weights come from the checkpoint; never download or read pretrained
    # files named in the config here.
    backbone_cfg = model_cfg.get('backbone')
    if isinstance(backbone_cfg, dict):
        pretrained, others = split_pretrained_entries(
            backbone_cfg.get('init_cfg')
        )
        if pretrained:
            backbone_cfg['init_cfg'] = others or None
    model = MODELS.build(model_cfg)
    model.eval()
    return model, cfg


def compare_with_model(
    state_dict: Dict[str, torch.Tensor],
    model: nn.Module,
    filename: str = '<checkpoint>',
) -> Tuple[List[str], List[str]]:
    """Checks shapes and returns the missing and unexpected keys.

    Raises:
        CheckpointMismatchError: If any shared key has another shape (see
            :func:`check_shapes`).
    """
    check_shapes(state_dict, model, filename)
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    return missing, unexpected


def run_tensor_mode(model: nn.Module, inputs: torch.Tensor) -> Any:
    """Runs the network part of a model on preprocessed inputs.

    OpenMMLab models (:class:`BaseModel`) run with ``mode='tensor'``, which
    skips the data preprocessor and the post-processing; plain modules run
    as they are.

    Args:
        model (nn.Module): The model.
        inputs (Tensor): Batch of shape ``(N, C, H, W)``.
    """
    with torch.no_grad():
        if isinstance(model, BaseModel):
            return model(inputs, mode='tensor')
        return model(inputs)


def is_mmdet_detector(model: nn.Module) -> bool:
    """Whether ``model`` is an mmdet detector (mmdet need not be
    installed for other models)."""
    try:
        from mmdet.models.detectors import BaseDetector
    except ImportError:
        return False
    return isinstance(model, BaseDetector)


def network_output_kind(model: nn.Module) -> str:
    """Says which outputs :func:`run_network` returns for ``model``."""
    if is_mmdet_detector(model):
        return 'backbone + neck features'
    if isinstance(model, BaseModel):
        return "mode='tensor' outputs"
    return 'forward outputs'


def run_network(model: nn.Module, inputs: torch.Tensor) -> Any:
    """Runs the network part that needs no data samples.

    mmdet detectors return their backbone + neck features
    (``extract_feat``): their ``mode='tensor'`` runs the RPN and RoI heads,
    which need image metadata. Other OpenMMLab models run
    ``mode='tensor'`` (see :func:`run_tensor_mode`), plain modules their
    forward.

    Args:
        model (nn.Module): The model.
        inputs (Tensor): Batch of shape ``(N, C, H, W)``.
    """
    if is_mmdet_detector(model):
        with torch.no_grad():
            return model.extract_feat(inputs)
    return run_tensor_mode(model, inputs)


def flatten_tensors(outputs: Any) -> List[torch.Tensor]:
    """Collects the tensors of nested tuples, lists and dicts in order."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        return [t for key in outputs for t in flatten_tensors(outputs[key])]
    if isinstance(outputs, (list, tuple)):
        return [t for item in outputs for t in flatten_tensors(item)]
    return []
