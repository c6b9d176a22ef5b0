"""Loading SLaK weights from OpenMMLab and released SLaK checkpoints.

The mapping from the release's module names to ours lives here and only here.
"""

import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

from ..utils.safe_load import safe_torch_load

# (released name fragment, our name fragment), applied to every key.
RELEASE_KEY_RENAMES: List[Tuple[str, str]] = [
    ('.large_kernel.LoRA1.', '.large_kernel.vertical.'),
    ('.large_kernel.LoRA2.', '.large_kernel.horizontal.'),
    ('.large_kernel.small_conv.', '.large_kernel.small.'),
    ('.large_kernel.lkb_origin.', '.large_kernel.large.'),
    ('.pwconv1.', '.pointwise_conv1.'),
    ('.pwconv2.', '.pointwise_conv2.'),
]
_RELEASE_MARKERS = (
    '.LoRA1.',
    '.LoRA2.',
    '.small_conv.',
    '.lkb_origin.',
    '.pwconv1.',
    '.pwconv2.',
)


def is_release_state_dict(state_dict: Dict[str, torch.Tensor]) -> bool:
    """Whether the keys use the released SLaK module names."""
    return any(
        marker in key for key in state_dict for marker in _RELEASE_MARKERS
    )


def release_to_slak_mm_key(key: str, final_norm_index: int = 3) -> str:
    """Maps one released key to ours (``head.*`` is returned unchanged).

    Args:
        key (str): Key of a released ImageNet model, e.g.
            ``stages.2.4.large_kernel.LoRA1.conv.weight``.
        final_norm_index (int): Index of the output norm that takes the
            release's final ``norm.*`` (the pooled LayerNorm).
    """
    for old, new in RELEASE_KEY_RENAMES:
        key = key.replace(old, new)
    if key.startswith('norm.'):
        key = f'norm{final_norm_index}.' + key[len('norm.') :]
    return key


def slak_mm_to_release_key(key: str, final_norm_index: int = 3) -> str:
    """Inverse of :func:`release_to_slak_mm_key`."""
    for old, new in RELEASE_KEY_RENAMES:
        key = key.replace(new, old)
    prefix = f'norm{final_norm_index}.'
    if key.startswith(prefix):
        key = 'norm.' + key[len(prefix) :]
    return key


def extract_state_dict(
    checkpoint, filename: str = '<checkpoint>', state_key: Optional[str] = None
) -> Dict[str, torch.Tensor]:
    """Finds the weights in a loaded checkpoint object.

    Args:
        checkpoint: What ``torch.load`` returned.
        filename (str): For error messages.
        state_key (str, optional): Take this entry (e.g. ``'model_ema'``).
            By default ``state_dict`` (OpenMMLab), then ``model`` (release),
            then the object itself if it maps names to tensors.
    """
    if not isinstance(checkpoint, dict):
        raise TypeError(
            f'{filename}: expected a dict checkpoint, got '
            f'{type(checkpoint).__name__}'
        )
    if state_key is not None:
        if state_key not in checkpoint:
            raise KeyError(
                f'{filename}: no {state_key!r} entry; it has '
                f'{sorted(checkpoint)}'
            )
        return checkpoint[state_key]
    for candidate in ('state_dict', 'model'):
        if candidate in checkpoint and isinstance(checkpoint[candidate], dict):
            return checkpoint[candidate]
    if checkpoint and all(
        isinstance(v, torch.Tensor) for v in checkpoint.values()
    ):
        return checkpoint
    raise KeyError(
        f'{filename}: found no weights; expected a "state_dict" '
        f'or "model" entry, got keys {sorted(checkpoint)[:10]}'
    )


def prepare_backbone_state_dict(
    state_dict: Dict[str, torch.Tensor],
    model: nn.Module,
    prefix: Optional[str] = None,
    filename: str = '<checkpoint>',
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Strips the prefix and renames released keys for a SLaK backbone.

    Args:
        state_dict (dict): Weights as stored.
        model (SLaK): The backbone to load into.
        prefix (str, optional): Keep only keys under this prefix (e.g.
            ``'backbone.'``) and strip it. If None and some keys start with
            ``backbone.``, those are taken.
        filename (str): For error messages.

    Returns:
        tuple[dict, list[str]]: The weights in our names, and the keys that
        were set aside (classifier head, the release's pooled final norm when
        the backbone is not in classification mode).
    """
    if prefix is None and any(k.startswith('backbone.') for k in state_dict):
        prefix = 'backbone.'
    if prefix:
        if not prefix.endswith('.'):
            prefix += '.'
        selected = OrderedDict(
            (k[len(prefix) :], v)
            for k, v in state_dict.items()
            if k.startswith(prefix)
        )
        if not selected:
            raise KeyError(
                f'{filename}: no key starts with prefix '
                f'{prefix!r}; first keys: {list(state_dict)[:5]}'
            )
        state_dict = selected

    set_aside = []
    if is_release_state_dict(state_dict):
        final_norm = max(model.out_indices)
        take_final_norm = (
            model.gap_before_final_norm and final_norm == model.num_stages - 1
        )
        converted = OrderedDict()
        for key, value in state_dict.items():
            if key.startswith('head.') or (
                key.startswith('norm.') and not take_final_norm
            ):
                set_aside.append(key)
                continue
            converted[release_to_slak_mm_key(key, final_norm)] = value
        state_dict = converted
    return state_dict, set_aside


def check_shapes(
    state_dict: Dict[str, torch.Tensor],
    model: nn.Module,
    filename: str = '<checkpoint>',
) -> None:
    """Raises if any tensor's shape differs from the model's.

    The message names every mismatching key with both shapes, so a
    checkpoint of other kernel sizes or width never loads silently.
    """
    own = model.state_dict()
    mismatches = [
        (key, tuple(value.shape), tuple(own[key].shape))
        for key, value in state_dict.items()
        if key in own and tuple(value.shape) != tuple(own[key].shape)
    ]
    if mismatches:
        lines = '\n'.join(
            f'  {key}: checkpoint {ckpt}, model {mine}'
            for key, ckpt, mine in mismatches[:20]
        )
        more = (
            f'\n  ... and {len(mismatches) - 20} more'
            if len(mismatches) > 20
            else ''
        )
        raise ValueError(
            f'{filename}: {len(mismatches)} tensor(s) do not fit the model '
            f'(check arch, width_factor, kernel_sizes, small_kernel, '
            f'decompose):\n{lines}{more}'
        )


def load_state_dict_checked(
    model: nn.Module,
    state_dict: Dict[str, torch.Tensor],
    filename: str = '<checkpoint>',
    set_aside: Optional[List[str]] = None,
    logger: str = 'current',
) -> Tuple[List, List]:
    """Loads weights after a strict shape check and reports the differences.

    Returns:
        tuple[list[str], list[str]]: Missing and unexpected keys.
    """
    check_shapes(state_dict, model, filename)
    own_keys = set(model.state_dict())
    matched = own_keys & set(state_dict)
    if not matched:
        raise KeyError(
            f'{filename}: none of its {len(state_dict)} keys '
            f'match the model (e.g. {list(state_dict)[:3]} vs '
            f'{sorted(own_keys)[:3]})'
        )
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    print_log(
        f'Loaded {len(matched)}/{len(own_keys)} tensors from {filename}',
        logger=logger,
    )
    if missing:
        print_log(
            f'Missing keys (left as initialised): {missing}',
            logger=logger,
            level=30,
        )
    if unexpected:
        print_log(
            f'Unexpected keys (ignored): {unexpected}', logger=logger, level=30
        )
    if set_aside:
        print_log(f'Keys not used by the backbone: {set_aside}', logger=logger)
    return list(missing), list(unexpected)


def load_slak_pretrained(
    model: nn.Module,
    filename: str,
    prefix: Optional[str] = None,
    map_location: str = 'cpu',
    state_key: Optional[str] = None,
    logger: str = 'current',
) -> Tuple[List, List]:
    """Loads an OpenMMLab or released SLaK checkpoint into a SLaK backbone.

    Args:
        model (SLaK): The backbone.
        filename (str): Path of the ``.pth`` file.
        prefix (str, optional): Key prefix to select and strip.
        map_location (str): Passed to ``torch.load``.
        state_key (str, optional): Checkpoint entry to read, e.g.
            ``'model_ema'``.

    Returns:
        tuple[list[str], list[str]]: Missing and unexpected keys.
    """
    checkpoint = safe_torch_load(filename, map_location=map_location)
    state_dict = extract_state_dict(checkpoint, filename, state_key)
    state_dict, set_aside = prepare_backbone_state_dict(
        state_dict, model, prefix, filename
    )
    if getattr(model, 'deploy', False) and any(
        re.search(r'large_kernel\.(vertical|horizontal|large|small)\.', key)
        for key in state_dict
    ):
        raise ValueError(
            f'{filename} holds training-form large kernels but the model was '
            'built with deploy=True; build it with deploy=False and call '
            'switch_to_deploy() after loading'
        )
    return load_state_dict_checked(
        model, state_dict, filename, set_aside, logger
    )
