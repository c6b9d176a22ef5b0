"""Strict checkpoint loading for inference.

The toolkits' inference entry points (``mmseg.apis.init_model``,
``MMSegInferencer``, ``mmdet.apis.init_detector``, ``DetInferencer``,
``mmpretrain.get_model``, ``ImageClassificationInferencer``) load weights
with mmengine's non-strict ``load_checkpoint``: a checkpoint that does not
fit the config only logs warnings and inference runs on random weights.
Importing :mod:`slak_mm` makes those loads strict for SLaK models
(:func:`~slak_mm.utils.checkpoint.make_mmengine_loading_strict`); these
helpers also take the class names saved in the checkpoint:

.. code-block:: python

    from slak_mm.apis import init_model
    model = init_model(CONFIG, CHECKPOINT, device='cpu')
    # then mmseg.apis.inference_model(model, img),
    # mmdet.apis.inference_detector(model, img), or
    # mmpretrain.ImageClassificationInferencer(model=model)(img)

:func:`check_checkpoint` checks a checkpoint against a config without
loading it into a model for use.
"""

import warnings
from typing import Optional, Union

import torch.nn as nn
from mmengine.config import Config

from ..models.builder import build_model_from_config
from ..utils.checkpoint import load_checkpoint_strict


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
        dataset_meta = _dataset_meta_of(loaded)
        if dataset_meta is not None:
            model.dataset_meta = dataset_meta
            model._dataset_meta = dataset_meta  # where mmpretrain keeps it
        else:
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
