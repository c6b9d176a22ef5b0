"""Strict checkpoint loading for inference.

The toolkits' inference entry points (``mmseg.apis.init_model``,
``MMSegInferencer``, ``mmdet.apis.init_detector``, ``DetInferencer``,
``mmpretrain.get_model``, ``ImageClassificationInferencer``) load weights
with mmengine's non-strict ``load_checkpoint``: a checkpoint that does not
fit the config only logs warnings and inference runs on random weights.
These helpers load strictly instead, with the same check as
``tools/test.py``:

.. code-block:: python

    from slak_mm.apis import init_model
    model = init_model(CONFIG, CHECKPOINT, device='cpu')
    # then mmseg.apis.inference_model(model, img),
    # mmdet.apis.inference_detector(model, img), or
    # mmpretrain.ImageClassificationInferencer(model=model)(img)

For the config-driven inferencers (``MMSegInferencer``, ``DetInferencer``),
call :func:`check_checkpoint` first.
"""

import warnings
from typing import Optional, Union

import torch.nn as nn
from mmengine.config import Config
from mmengine.runner.checkpoint import _load_checkpoint

from ..engine.runner import DEFAULT_REVISE_KEYS, load_state_dict_strict
from .model_builder import build_model_from_config


def _dataset_meta_of(checkpoint: dict) -> Optional[dict]:
    meta = checkpoint.get('meta')
    if not isinstance(meta, dict):
        return None
    if isinstance(meta.get('dataset_meta'), dict):
        return {k.lower(): v for k, v in meta['dataset_meta'].items()}
    if 'CLASSES' in meta:  # mmseg 0.x / mmdet 2.x files
        dataset_meta = dict(classes=meta['CLASSES'])
        if 'PALETTE' in meta:
            dataset_meta['palette'] = meta['PALETTE']
        return dataset_meta
    return None


def load_checkpoint_strict(
    model: nn.Module,
    filename: str,
    map_location: str = 'cpu',
    revise_keys: list = DEFAULT_REVISE_KEYS,
) -> dict:
    """Loads a checkpoint into a model, refusing one that does not fit.

    Every tensor of the model must be in the checkpoint with its shape;
    entries the model does not have are ignored and returned in the log.
    The file is read with ``torch.load(weights_only=True)``. The class names
    saved in the checkpoint (``meta.dataset_meta``, or ``CLASSES`` /
    ``PALETTE`` of older files) become ``model.dataset_meta`` (and
    mmpretrain's ``model._dataset_meta``), as the toolkits' loaders do.

    Args:
        model (nn.Module): A model built from the matching config.
        filename (str): Local path or http(s) URL of the checkpoint.
        map_location (str): Device the tensors are loaded to.
        revise_keys (list): ``(pattern, replacement)`` pairs for the keys;
            by default a DDP ``module.`` prefix is stripped.

    Returns:
        dict: The loaded checkpoint.

    Raises:
        CheckpointMismatchError: If a tensor of the model is missing or has
            another shape; lists every such key with both shapes.
        CheckpointFileError: If the file is not a readable checkpoint.
    """
    checkpoint = _load_checkpoint(filename, map_location=map_location)
    load_state_dict_strict(model, checkpoint, filename, revise_keys)
    dataset_meta = _dataset_meta_of(checkpoint)
    if dataset_meta is not None:
        model.dataset_meta = dataset_meta
        model._dataset_meta = dataset_meta  # where mmpretrain keeps it
    return checkpoint


def _as_config(config: Union[str, Config], cfg_options) -> Config:
    cfg = Config.fromfile(config) if isinstance(config, str) else config.copy()
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def init_model(
    config: Union[str, Config],
    checkpoint: Optional[str] = None,
    device: str = 'cpu',
    cfg_options: Optional[dict] = None,
) -> nn.Module:
    """Builds a model with its toolkit's API and loads a checkpoint strictly.

    The config's ``default_scope`` picks ``mmseg.apis.init_model``,
    ``mmdet.apis.init_detector`` or ``mmpretrain.get_model``; the model they
    build is used as is (test-mode settings, ``cfg`` attached, pretrained
    ``init_cfg`` not read), then :func:`load_checkpoint_strict` loads the
    checkpoint.

    Args:
        config (str | Config): The config the checkpoint was trained with.
        checkpoint (str, optional): Checkpoint path or URL; None leaves the
            weights as built.
        device (str): E.g. ``'cpu'`` or ``'cuda:0'``.
        cfg_options (dict, optional): Overrides, e.g.
            ``{'model.backbone.deploy': True}`` for a deployed checkpoint.

    Returns:
        nn.Module: The model in eval mode on ``device``.
    """
    cfg = _as_config(config, cfg_options)
    scope = cfg.get('default_scope')
    if scope not in ('mmseg', 'mmdet', 'mmpretrain'):
        raise ValueError(
            f'{config}: default_scope must be mmseg, mmdet or mmpretrain, '
            f'got {scope!r}'
        )
    with warnings.catch_warnings(record=True) as caught:
        # Built without a checkpoint, the toolkits warn that they use
        # default class names; the checkpoint's own names are set below.
        if scope == 'mmseg':
            from mmseg.apis import init_model as toolkit_init

            model = toolkit_init(cfg, None, device=device)
        elif scope == 'mmdet':
            from mmdet.apis import init_detector

            model = init_detector(cfg, None, device=device)
        else:
            from mmpretrain.apis import get_model

            model = get_model(cfg, pretrained=False, device=device)
    for caught_warning in caught:
        if 'checkpoint is None' not in str(caught_warning.message):
            warnings.warn(
                caught_warning.message, caught_warning.category, stacklevel=2
            )
    if checkpoint is not None:
        loaded = load_checkpoint_strict(model, checkpoint, map_location='cpu')
        if _dataset_meta_of(loaded) is None:
            warnings.warn(
                f'{checkpoint} saves no class names (meta.dataset_meta); '
                "the model keeps its toolkit's default names",
                stacklevel=2,
            )
    model.to(device)
    model.eval()
    return model


def check_checkpoint(
    config: Union[str, Config],
    checkpoint: str,
    cfg_options: Optional[dict] = None,
) -> None:
    """Raises unless ``checkpoint`` fits the model of ``config``.

    Meant to run before the config-driven inferencers (``MMSegInferencer``,
    ``DetInferencer``), which load non-strictly; builds the model on the CPU
    without initialising it.

    Raises:
        CheckpointMismatchError: See :func:`load_checkpoint_strict`.
    """
    cfg = _as_config(config, cfg_options)
    model, _ = build_model_from_config(cfg)
    load_checkpoint_strict(model, checkpoint)
