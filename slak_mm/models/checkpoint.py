"""Loading pretrained weights into a SLaK backbone (``init_cfg``).

What is particular to a backbone: selecting the ``backbone.`` part of a
downstream checkpoint, reading the released SLaK ImageNet files directly
(their keys are renamed on the fly; the mapping from the release's module
names to ours lives here and only here) and tolerating the new output norms
of a downstream backbone. Reading, the fit check and the strict load are
:mod:`slak_mm.utils.checkpoint`, shared by every loading path. Converting
released files to OpenMMLab 2.x files is :mod:`slak_mm.converters.release`.
"""

from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

from ..utils.checkpoint import (
    TRAINING_FORM,
    extract_state_dict,
    is_release_state_dict,
    load_state_dict_strict,
    safe_torch_load,
)

# (released name fragment, our name fragment), applied to every key.
RELEASE_KEY_RENAMES: List[Tuple[str, str]] = [
    ('.large_kernel.LoRA1.', '.large_kernel.vertical.'),
    ('.large_kernel.LoRA2.', '.large_kernel.horizontal.'),
    ('.large_kernel.small_conv.', '.large_kernel.small.'),
    ('.large_kernel.lkb_origin.', '.large_kernel.large.'),
    ('.pwconv1.', '.pointwise_conv1.'),
    ('.pwconv2.', '.pointwise_conv2.'),
]


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
        tuple[list[str], list[str]]: Missing keys (only output norms may be
        missing) and unexpected keys.

    Raises:
        CheckpointMismatchError: If another tensor of the backbone is
            missing or has another shape.
    """
    checkpoint = safe_torch_load(filename, map_location=map_location)
    state_dict = extract_state_dict(checkpoint, filename, state_key)
    state_dict, set_aside = prepare_backbone_state_dict(
        state_dict, model, prefix, filename
    )
    if getattr(model, 'deploy', False) and any(
        TRAINING_FORM.search(key) for key in state_dict
    ):
        raise ValueError(
            f'{filename} holds training-form large kernels but the model was '
            'built with deploy=True; build it with deploy=False and call '
            'switch_to_deploy() after loading'
        )
    # The per-output norms of a downstream backbone are new layers when
    # the checkpoint comes from ImageNet; every other tensor must be there.
    output_norms = tuple(f'norm{i}.' for i in model.out_indices)
    if set_aside:
        print_log(f'Keys not used by the backbone: {set_aside}', logger=logger)
    return load_state_dict_strict(
        model, state_dict, filename, output_norms, logger
    )


def split_pretrained_entries(init_cfg) -> Tuple[List[dict], List]:
    """Splits an ``init_cfg`` into its ``dict(type='Pretrained', ...)``
    entries and the others.

    Args:
        init_cfg (dict | list | tuple | None): One entry or several, as
            mmengine accepts them.

    Returns:
        tuple[list[dict], list]: The ``Pretrained`` entries and the other
        entries, each in their original order.
    """
    if init_cfg is None:
        entries = []
    elif isinstance(init_cfg, (list, tuple)):
        entries = list(init_cfg)
    else:
        entries = [init_cfg]
    pretrained, others = [], []
    for entry in entries:
        is_pretrained = (
            isinstance(entry, dict) and entry.get('type') == 'Pretrained'
        )
        (pretrained if is_pretrained else others).append(entry)
    return pretrained, others
