"""Converting released SLaK checkpoints to slak_mm (OpenMMLab 2.x) files.

The release's files come in two layouts: ImageNet models
``{'model': ..., 'model_ema': ..., 'args': ..., 'epoch': ...}`` and
downstream mmseg 0.x / mmdet 2.x models ``{'state_dict': {'backbone.*':
...}, 'meta': ...}``. The converters here read the hyper-parameters off the
tensors, rename the keys and check the result against the model it implies;
``tools/model_converters/convert_release_checkpoint.py`` is their command line.

The key-name map itself (``RELEASE_KEY_RENAMES``) lives with the loaders
in :mod:`slak_mm.models.checkpoint`, because a SLaK backbone also loads a
released ImageNet file directly through ``init_cfg``.
"""

import os
import re
from collections import OrderedDict
from typing import Dict, List, Tuple, Union

import torch
import torch.nn as nn

from ..models.checkpoint import (
    prepare_backbone_state_dict,
    release_to_slak_mm_key,
    slak_mm_to_release_key,
)
from ..models.slak import SLaK
from ..utils.checkpoint import (
    check_shapes,
    extract_state_dict,
    is_release_state_dict,
    strip_ddp_prefix,
)

_STAGE_BLOCK = re.compile(r'^stages\.(\d+)\.(\d+)\.')


def masked_weight_sparsity(state_dict: Dict[str, torch.Tensor]) -> float:
    """Fraction of zeros over every 2-D and 4-D weight (convs, linears).

    These are the weights SLaK's sparse training masks, so on a released
    checkpoint this recovers its sparsity; 0.0 for a dense one.
    """
    total = zeros = 0
    for key, value in state_dict.items():
        if key.endswith('weight') and value.dim() in (2, 4):
            total += value.numel()
            zeros += int((value == 0).sum())
    return zeros / total if total else 0.0


def _fit_arch(
    depths: List[int], channels: List[int]
) -> Tuple[Union[str, dict], float]:
    """Finds the named arch and width factor that give these widths."""
    for name, setting in SLaK.arch_settings.items():
        if setting['depths'] != depths:
            continue
        base = setting['channels']
        factor = round(channels[-1] / base[-1], 2)
        if [int(c * factor) for c in base] == channels:
            return name, factor
    return dict(depths=depths, channels=channels), 1.0


def _stage_depths(keys, filename: str) -> List[int]:
    """Blocks per stage, from the ``stages.<i>.<j>.`` keys (our names)."""
    depth_of: Dict[int, int] = {}
    for key in keys:
        match = _STAGE_BLOCK.match(key)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            depth_of[stage] = max(depth_of.get(stage, 0), block + 1)
    if not depth_of:
        raise KeyError(f'{filename}: no "stages.<i>.<j>." keys; not SLaK')
    depths = [depth_of.get(i, 0) for i in range(max(depth_of) + 1)]
    if 0 in depths:
        raise KeyError(f'{filename}: stage(s) without blocks: {depths}')
    return depths


class _ReleaseTensors:
    """A released state dict in our names, whose lookups name the release
    key when a tensor is absent."""

    def __init__(self, state_dict: Dict[str, torch.Tensor], filename: str):
        self.filename = filename
        self.ours = OrderedDict(
            (release_to_slak_mm_key(k), v)
            for k, v in state_dict.items()
            if not k.startswith('head.')
        )

    def __contains__(self, key: str) -> bool:
        return key in self.ours

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self.ours:
            raise KeyError(
                f'{self.filename}: expected {slak_mm_to_release_key(key)!r} '
                f'(our name {key!r}) in a released SLaK checkpoint'
            )
        return self.ours[key]


def infer_release_config(
    state_dict: Dict[str, torch.Tensor], filename: str = '<checkpoint>'
) -> dict:
    """Reads a released model's hyper-parameters off its tensors.

    Args:
        state_dict (dict): A released ImageNet state dict (release names).
        filename (str): For error messages.

    Returns:
        dict: ``backbone`` (kwargs of :class:`SLaK`: arch, width_factor,
        kernel_sizes, small_kernel, decompose, in_channels,
        layer_scale_init_value), ``num_classes`` (None without a head),
        ``sparsity`` (zeros over the 2-D and 4-D weights) and ``channels``
        (the widths after ``width_factor``).

    Raises:
        KeyError: If an expected tensor is absent; the message names it.
    """
    tensors = _ReleaseTensors(state_dict, filename)
    depths = _stage_depths(tensors.ours, filename)
    stem = tensors['downsample_layers.0.0.weight']
    channels = [stem.shape[0]] + [
        tensors[f'downsample_layers.{i}.1.weight'].shape[0]
        for i in range(1, len(depths))
    ]
    decompose = 'stages.0.0.large_kernel.vertical.conv.weight' in tensors
    long_branch = 'vertical' if decompose else 'large'
    long_kernel = f'large_kernel.{long_branch}.conv.weight'
    arch, width_factor = _fit_arch(depths, channels)
    backbone = dict(arch=arch, width_factor=width_factor)
    backbone['kernel_sizes'] = [
        tensors[f'stages.{i}.0.{long_kernel}'].shape[2]
        for i in range(len(depths))
    ]
    small = tensors['stages.0.0.large_kernel.small.conv.weight']
    backbone['small_kernel'] = small.shape[2]
    backbone['decompose'] = decompose
    backbone['in_channels'] = stem.shape[1]
    has_layer_scale = 'stages.0.0.gamma' in tensors
    backbone['layer_scale_init_value'] = 1e-6 if has_layer_scale else 0.0
    head = state_dict.get('head.weight')
    return dict(
        backbone=backbone,
        channels=channels,
        num_classes=None if head is None else head.shape[0],
        sparsity=masked_weight_sparsity(state_dict),
    )


def _require_complete(
    converted: Dict[str, torch.Tensor],
    model: nn.Module,
    filename: str,
    allowed_missing: Tuple[str, ...] = (),
) -> List[str]:
    """Checks shapes and that every model tensor is present.

    Returns:
        list[str]: The model keys left to their initialisation (only those
        starting with ``allowed_missing``).
    """
    check_shapes(converted, model, filename)
    own = model.state_dict()
    missing = [k for k in own if k not in converted]
    unexpected = [k for k in converted if k not in own]
    bad_missing = [k for k in missing if not k.startswith(allowed_missing)]
    if bad_missing or unexpected:
        raise KeyError(
            f'{filename}: keys do not match the inferred model; missing '
            f'{bad_missing[:10]}, unexpected '
            f'{[slak_mm_to_release_key(k) for k in unexpected[:10]]}'
        )
    return missing


def _converted_backbone(
    state_dict: Dict[str, torch.Tensor],
    model: SLaK,
    filename: str,
    allowed_missing: Tuple[str, ...] = (),
) -> Dict[str, torch.Tensor]:
    """The release's backbone tensors in our names under ``backbone.``,
    checked against ``model``."""
    backbone, _ = prepare_backbone_state_dict(state_dict, model, '', filename)
    _require_complete(backbone, model, filename, allowed_missing)
    return OrderedDict((f'backbone.{k}', v) for k, v in backbone.items())


def convert_release_classifier(
    state_dict: Dict[str, torch.Tensor], filename: str = '<checkpoint>'
) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Converts a released ImageNet model to an mmpretrain ImageClassifier.

    The backbone goes under ``backbone.`` in classification mode (the
    release's pooled final LayerNorm becomes ``norm3``) and ``head.*``
    becomes ``head.fc.*`` of a ``LinearClsHead``.

    Args:
        state_dict (dict): Released weights (release names).
        filename (str): For error messages.

    Returns:
        tuple[dict, dict]: The converted state dict and the inferred
        config (see :func:`infer_release_config`).

    Raises:
        ValueError: If a tensor's shape does not fit the model inferred from
            the rest (names the key and both shapes).
        KeyError: If tensors are missing or left over.
    """
    state_dict = strip_ddp_prefix(state_dict)
    info = infer_release_config(state_dict, filename)
    if info['num_classes'] is None or 'head.bias' not in state_dict:
        raise KeyError(
            f'{filename}: no "head.weight"/"head.bias"; use the '
            'backbone-only conversion for headless checkpoints'
        )
    num_stages = len(info['channels'])
    model = SLaK(
        **info['backbone'],
        out_indices=num_stages - 1,
        gap_before_final_norm=True,
    )
    converted = _converted_backbone(state_dict, model, filename)
    head_weight = state_dict['head.weight']
    if head_weight.shape[1] != info['channels'][-1]:
        raise ValueError(
            f'{filename}: head.weight has shape {tuple(head_weight.shape)}'
            f' but the last stage has {info["channels"][-1]} channels'
        )
    converted['head.fc.weight'] = head_weight
    converted['head.fc.bias'] = state_dict['head.bias']
    return converted, info


def convert_release_backbone(
    state_dict: Dict[str, torch.Tensor], filename: str = '<checkpoint>'
) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Converts a released ImageNet model to a ``backbone.``-only file.

    Meant for ``init_cfg=dict(type='Pretrained', checkpoint=...,
    prefix='backbone.')`` of mmdet/mmseg backbones with
    ``out_indices=(0, 1, 2, 3)``. The classifier head and the pooled final
    LayerNorm are left out: the per-output norms ``norm0..norm3`` of a
    downstream backbone are new layers, as in the release's own
    downstream code.

    Returns:
        tuple[dict, dict]: The converted state dict and the inferred config.
    """
    state_dict = strip_ddp_prefix(state_dict)
    info = infer_release_config(state_dict, filename)
    model = SLaK(
        **info['backbone'], out_indices=tuple(range(len(info['channels'])))
    )
    converted = _converted_backbone(
        state_dict, model, filename, allowed_missing=('norm',)
    )
    return converted, info


def _downstream_meta(meta: dict) -> dict:
    """Copies 0.x/2.x ``CLASSES``/``PALETTE`` to ``dataset_meta``."""
    meta = dict(meta or {})
    dataset_meta = dict(meta.get('dataset_meta') or {})
    for old, new in (('CLASSES', 'classes'), ('PALETTE', 'palette')):
        if old in meta and new not in dataset_meta:
            dataset_meta[new] = meta[old]
    if dataset_meta:
        meta['dataset_meta'] = dataset_meta
    return meta


def convert_release_downstream(
    checkpoint: dict, filename: str = '<checkpoint>'
) -> Tuple[dict, List[str]]:
    """Converts a released mmseg 0.x / mmdet 2.x checkpoint to our names.

    ``backbone.*`` keys are renamed with
    :data:`~slak_mm.models.checkpoint.RELEASE_KEY_RENAMES` (``norm0..norm3``
    keep their names); every other key (neck, heads) is kept as is:
    UperNet/FCN heads of mmseg 0.x -> 1.x and FPN/RPN/Cascade RoI heads of
    mmdet 2.x -> 3.x use the same module names. Only ``state_dict`` and
    ``meta`` are kept; ``meta['CLASSES']`` and ``meta['PALETTE']`` are
    copied to ``meta['dataset_meta']`` as 2.x tools expect.

    Args:
        checkpoint (dict): The loaded file.
        filename (str): For error messages.

    Returns:
        tuple[dict, list[str]]: The new checkpoint and notes on what was
        dropped or changed.
    """
    if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint:
        raise KeyError(
            f'{filename}: expected a "state_dict" entry (mmseg 0.x / '
            f'mmdet 2.x layout), got {sorted(checkpoint)[:10]}'
        )
    state_dict = strip_ddp_prefix(checkpoint['state_dict'])
    backbone = {
        k[len('backbone.') :]: v
        for k, v in state_dict.items()
        if k.startswith('backbone.')
    }
    if not backbone:
        raise KeyError(f'{filename}: no "backbone." keys in state_dict')
    if not is_release_state_dict(backbone):
        raise ValueError(
            f'{filename}: the backbone keys are not in the released SLaK '
            f'names (e.g. {list(backbone)[:3]}); nothing to convert'
        )
    notes = []
    converted = OrderedDict()
    for key, value in state_dict.items():
        if not key.startswith('backbone.'):
            converted[key] = value
            continue
        inner = key[len('backbone.') :]
        if inner.startswith(('norm.', 'head.')):
            # A pooled norm or classifier left in a downstream backbone
            # has no counterpart in our multi-output backbone.
            notes.append(f'dropped {key} (not part of a downstream SLaK)')
            continue
        converted['backbone.' + release_to_slak_mm_key(inner)] = value
    dropped = sorted(set(checkpoint) - {'state_dict', 'meta'})
    if dropped:
        notes.append(f'dropped top-level entries {dropped}')
    meta = _downstream_meta(checkpoint.get('meta'))
    return dict(meta=meta, state_dict=converted), notes


def detect_release_kind(checkpoint, filename: str = '<checkpoint>') -> str:
    """Tells a released ImageNet file from a downstream one.

    Returns:
        str: ``'downstream'`` for a ``state_dict`` with ``backbone.`` keys,
        ``'imagenet'`` for a file with ``model`` or ``model_ema``.

    Raises:
        TypeError: If the checkpoint is not a dict.
        KeyError: If it is neither kind; the message lists its entries.
    """
    if not isinstance(checkpoint, dict):
        raise TypeError(f'{filename}: not a dict checkpoint')
    state = checkpoint.get('state_dict')
    if isinstance(state, dict) and any(
        k.startswith('backbone.') for k in state
    ):
        return 'downstream'
    if 'model' in checkpoint or 'model_ema' in checkpoint:
        return 'imagenet'
    raise KeyError(
        f'{filename}: neither a released ImageNet checkpoint ("model") '
        f'nor a downstream one ("state_dict" with "backbone." keys); '
        f'entries: {sorted(checkpoint)[:10]}'
    )


def convert_release_imagenet(
    checkpoint: dict,
    filename: str = '<checkpoint>',
    ema: bool = False,
    backbone_only: bool = False,
) -> Tuple[dict, dict]:
    """Converts a released ImageNet file (what ``torch.load`` returned).

    Args:
        checkpoint (dict): ``{'model': ..., 'model_ema': ..., 'epoch': ...}``.
        filename (str): For error messages and ``meta``.
        ema (bool): Convert ``model_ema`` instead of ``model``.
        backbone_only (bool): Write only ``backbone.`` keys (see
            :func:`convert_release_backbone`), else an ImageClassifier
            (see :func:`convert_release_classifier`).

    Returns:
        tuple[dict, dict]: The new checkpoint (``meta['slak_release']``
        records source, entry, epoch and sparsity; ``state_dict``) and the
        inferred config (see :func:`infer_release_config`).

    Raises:
        ValueError: If the entry is not in the released names.
    """
    state_key = 'model_ema' if ema else 'model'
    release = extract_state_dict(checkpoint, filename, state_key)
    if not is_release_state_dict(release):
        raise ValueError(f'{filename}: "{state_key}" is not in release names')
    convert = (
        convert_release_backbone
        if backbone_only
        else convert_release_classifier
    )
    state_dict, info = convert(release, filename)
    meta = dict(
        slak_release=dict(
            source=os.path.basename(filename),
            state_key=state_key,
            epoch=checkpoint.get('epoch'),
            sparsity=info['sparsity'],
        )
    )
    return dict(meta=meta, state_dict=state_dict), info


def _config_text(value) -> str:
    """Writes dicts as ``dict(k=v)``, the way OpenMMLab configs read."""
    if isinstance(value, dict):
        items = ', '.join(f'{k}={_config_text(v)}' for k, v in value.items())
        return f'dict({items})'
    return repr(value)


def _backbone_config_text(info: dict, extra: dict) -> str:
    backbone = dict(type='SLaK', **info['backbone'], **extra)
    body = ',\n        '.join(
        f'{k}={_config_text(v)}' for k, v in backbone.items()
    )
    return f'backbone=dict(\n        {body})'


def release_summary(info: dict, out_path: str, backbone_only: bool) -> str:
    """What was inferred, and the config lines that use the converted file.

    Args:
        info (dict): From :func:`infer_release_config`.
        out_path (str): Where the converted file is written.
        backbone_only (bool): Whether it holds only the backbone.
    """
    backbone = info['backbone']
    lines = [
        f'arch: {backbone["arch"]}, width_factor: '
        f'{backbone["width_factor"]}, widths: {info["channels"]}',
        f'kernel sizes: {backbone["kernel_sizes"]}, small kernel: '
        f'{backbone["small_kernel"]}, decompose: {backbone["decompose"]}',
        f'sparsity (zeros in 2-D/4-D weights): {info["sparsity"]:.4f}',
        'Config keys to set:',
    ]
    if backbone_only:
        init_cfg = dict(
            type='Pretrained', checkpoint=out_path, prefix='backbone.'
        )
        cfg = _backbone_config_text(
            info, dict(out_indices=(0, 1, 2, 3), init_cfg=init_cfg)
        )
        lines.append(f'model = dict(\n    {cfg})')
    else:
        cfg = _backbone_config_text(
            info, dict(out_indices=3, gap_before_final_norm=True)
        )
        lines.append(
            f"model = dict(\n    type='ImageClassifier',\n    {cfg},\n"
            f"    neck=None,\n    head=dict(type='LinearClsHead', "
            f'num_classes={info["num_classes"]}, '
            f'in_channels={info["channels"][-1]}))\n'
            f'load_from = {out_path!r}'
        )
    return '\n'.join(lines)
