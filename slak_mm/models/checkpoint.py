"""Loading weights into SLaK models, with strict checks.

Reads OpenMMLab checkpoints and the released SLaK ImageNet ones (whose keys
are renamed on the fly: the mapping from the release's module names to ours
lives here and only here), checks that every tensor of the model is there
with its shape, and loads. Used by ``init_cfg``,
:class:`~slak_mm.engine.StrictLoadingRunner` (``load_from``, ``--resume``,
``tools/test.py``) and :mod:`slak_mm.apis`. Converting released files to
OpenMMLab 2.x files is :mod:`slak_mm.converters.release`.
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


class CheckpointMismatchError(KeyError, ValueError):
    """A checkpoint whose tensors do not fit the model.

    Raised for missing tensors and for tensors of another shape; the message
    lists the keys with both shapes and says which option fixes common
    cases. A ``KeyError`` and a ``ValueError`` at once, so callers that
    catch either keep working.
    """

    def __str__(self) -> str:
        # KeyError would print the repr of a multi-line message.
        return str(self.args[0]) if self.args else ''


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

    Raises:
        TypeError: If the checkpoint or its weights entry is not a dict
            (e.g. a list); the message names the file and the entry.
        KeyError: If no weights entry is found.
    """
    if not isinstance(checkpoint, dict):
        raise TypeError(
            f'{filename} holds a {type(checkpoint).__name__} where a '
            'checkpoint dict belongs (expected a dict with a "state_dict" '
            'entry mapping parameter names to tensors)'
        )
    if state_key is not None:
        if state_key not in checkpoint:
            raise KeyError(
                f'{filename}: no {state_key!r} entry; it has '
                f'{sorted(checkpoint)}'
            )
        return _require_mapping(checkpoint[state_key], filename, state_key)
    for candidate in ('state_dict', 'model'):
        if candidate in checkpoint:
            return _require_mapping(checkpoint[candidate], filename, candidate)
    if checkpoint and all(
        isinstance(v, torch.Tensor) for v in checkpoint.values()
    ):
        return checkpoint
    raise KeyError(
        f'{filename}: found no weights; expected a "state_dict" '
        f'or "model" entry, got keys {sorted(map(str, checkpoint))[:10]}'
    )


def _require_mapping(entry, filename: str, name: str) -> Dict:
    if not isinstance(entry, dict):
        raise TypeError(
            f'{filename}: its {name!r} entry is a {type(entry).__name__} '
            'where a dict mapping parameter names to tensors belongs'
        )
    return entry


def strip_module_prefix(
    state_dict: Dict[str, torch.Tensor],
) -> Dict[str, torch.Tensor]:
    """Removes the ``module.`` prefix that DDP-wrapped saves carry."""
    if state_dict and all(k.startswith('module.') for k in state_dict):
        return OrderedDict(
            (k[len('module.') :], v) for k, v in state_dict.items()
        )
    return state_dict


# --------------------------------------------------------------------------
# Checking that a checkpoint fits a model: one implementation for every
# loading path (tools/test.py, load_from, --resume, init_cfg,
# tools/model_converters/deploy.py, the converters and slak_mm.apis).
# --------------------------------------------------------------------------

_DEPLOY_FORM = re.compile(r'large_kernel\.fused_')
_TRAINING_FORM = re.compile(
    r'large_kernel\.(vertical|horizontal|large|small)\.'
)
# (form of the checkpoint's extra keys, form of the model's missing keys,
# what to do about it).
_FORM_HINTS = (
    (
        _DEPLOY_FORM,
        _TRAINING_FORM,
        'the checkpoint is in deploy form (fused large kernels, as '
        'tools/model_converters/deploy.py writes) but the model is in '
        'training form: build it with deploy=True, e.g. --cfg-options '
        'model.backbone.deploy=True',
    ),
    (
        _TRAINING_FORM,
        _DEPLOY_FORM,
        'the checkpoint is in training form but the model was built '
        'with deploy=True: drop that option (--cfg-options '
        'model.backbone.deploy=False), or fuse the checkpoint first with '
        'tools/model_converters/deploy.py',
    ),
)
# Top-level module names of each toolkit's task heads.
_TASK_OF_HEAD = (
    ('decode_head.', 'segmentation (mmseg)'),
    ('auxiliary_head.', 'segmentation (mmseg)'),
    ('rpn_head.', 'detection (mmdet)'),
    ('roi_head.', 'detection (mmdet)'),
    ('bbox_head.', 'detection (mmdet)'),
    ('neck.', None),  # shared by several tasks
    ('head.', 'classification (mmpretrain)'),
)
# The layers whose first dimension is the number of classes.
_CLASSIFIER_LAYERS = ('conv_seg.', 'fc_cls.', 'conv_logits.', 'head.fc.')
_BACKBONE_PARTS = ('stages.', 'downsample_layers.', 'large_kernel.')
_MAX_LISTED = 30


def _shape_of(value) -> object:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    return type(value).__name__


def _task_of(keys: List[str]) -> Optional[str]:
    for key in keys:
        for prefix, task in _TASK_OF_HEAD:
            if key.startswith(prefix) and task is not None:
                return task
    return None


def mismatch_hints(
    missing: List[str],
    wrong_shape: List[Tuple[str, object, object]],
    unexpected: List[str],
) -> List[str]:
    """What probably went wrong, with the option that fixes it."""
    hints = [
        hint
        for checkpoint_form, model_form, hint in _FORM_HINTS
        if any(checkpoint_form.search(k) for k in unexpected)
        and any(model_form.search(k) for k in missing)
    ]
    if is_release_state_dict(dict.fromkeys(unexpected)):
        hints.append(
            'the checkpoint uses the released SLaK names (LoRA1, LoRA2, '
            'small_conv, pwconv*): convert it with '
            'tools/model_converters/convert_release_checkpoint.py'
        )
    model_task = _task_of(missing + [k for k, _, _ in wrong_shape])
    checkpoint_task = _task_of(unexpected)
    if model_task and checkpoint_task and model_task != checkpoint_task:
        hints.append(
            f'the checkpoint holds a {checkpoint_task} model but the config '
            f'builds a {model_task} model'
        )
    if any(
        layer in k for k, _, _ in wrong_shape for layer in _CLASSIFIER_LAYERS
    ):
        hints.append(
            'the number of classes differs (classifier shapes above): set '
            "num_classes to the checkpoint's, or take only its backbone with "
            "model.backbone.init_cfg=dict(type='Pretrained', "
            "checkpoint=..., prefix='backbone.')"
        )
    if any(part in k for k, _, _ in wrong_shape for part in _BACKBONE_PARTS):
        hints.append(
            'the backbone differs: check arch, width_factor, kernel_sizes, '
            'small_kernel and decompose'
        )
    return hints


def _listed(lines: List[str]) -> List[str]:
    if len(lines) <= _MAX_LISTED:
        return lines
    return lines[:_MAX_LISTED] + [f'  ... and {len(lines) - _MAX_LISTED} more']


def describe_mismatch(
    filename: str,
    missing: List[str],
    wrong_shape: List[Tuple[str, object, object]],
    unexpected: List[str],
    own_state: Dict[str, torch.Tensor],
) -> str:
    """One message listing every missing and misshapen key with shapes."""
    counts = []
    if wrong_shape:
        counts.append(f'{len(wrong_shape)} tensor(s) with another shape')
    if missing:
        counts.append(f'{len(missing)} tensor(s) of the model missing')
    lines = [f'{filename} does not fit the model: {", ".join(counts)}']
    if wrong_shape:
        lines.append('other shapes:')
        lines += _listed(
            [
                f'  {key}: checkpoint {ckpt}, model {mine}'
                for key, ckpt, mine in wrong_shape
            ]
        )
    if missing:
        lines.append('missing from the checkpoint:')
        lines += _listed(
            [f'  {key}: model {_shape_of(own_state[key])}' for key in missing]
        )
    if unexpected:
        modules: Dict[str, int] = {}
        for key in unexpected:
            module = key.split('.', 1)[0]
            modules[module] = modules.get(module, 0) + 1
        listed = ', '.join(f'{m}.* ({n})' for m, n in modules.items())
        lines.append(
            f'in the checkpoint but not in the model ({len(unexpected)}): '
            f'{listed}'
        )
    for hint in mismatch_hints(missing, wrong_shape, unexpected):
        lines.append(f'hint: {hint}')
    return '\n'.join(lines)


def compare_state_dicts(
    state_dict: Dict[str, torch.Tensor], own_state: Dict[str, torch.Tensor]
) -> Tuple[List[str], List[Tuple[str, object, object]], List[str]]:
    """Missing keys, keys with another shape and unexpected keys.

    Returns:
        tuple: ``missing`` (model keys absent from ``state_dict``),
        ``wrong_shape`` (``(key, checkpoint shape, model shape)``; a value
        that is not a tensor counts, with its type name as shape) and
        ``unexpected`` (checkpoint keys the model does not have).
    """
    missing, wrong_shape = [], []
    for key, mine in own_state.items():
        if key not in state_dict:
            missing.append(key)
            continue
        value = state_dict[key]
        if key.endswith('_extra_state'):
            continue
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(
            mine.shape
        ):
            wrong_shape.append((key, _shape_of(value), tuple(mine.shape)))
    unexpected = [k for k in state_dict if k not in own_state]
    return missing, wrong_shape, unexpected


def check_checkpoint_fits(
    state_dict: Dict[str, torch.Tensor],
    model: nn.Module,
    filename: str = '<checkpoint>',
    allowed_missing: Tuple[str, ...] = (),
) -> Tuple[List[str], List[str]]:
    """Raises unless every tensor of the model is in the checkpoint with
    its shape.

    Args:
        state_dict (dict): The checkpoint's weights, in the model's names.
        model (nn.Module): The model to load into.
        filename (str): For the message.
        allowed_missing (tuple[str]): Key prefixes that may be absent (left
            as initialised), e.g. the new output norms of a downstream
            backbone.

    Returns:
        tuple[list[str], list[str]]: Keys not in the model (ignored when
        loading) and the allowed missing keys.

    Raises:
        CheckpointMismatchError: If a model tensor is missing or has another
            shape; the message lists every such key with both shapes.
    """
    own_state = model.state_dict()
    missing, wrong_shape, unexpected = compare_state_dicts(
        state_dict, own_state
    )
    tolerated = [
        k for k in missing if allowed_missing and k.startswith(allowed_missing)
    ]
    missing = [k for k in missing if k not in tolerated]
    if missing or wrong_shape:
        raise CheckpointMismatchError(
            describe_mismatch(
                filename, missing, wrong_shape, unexpected, own_state
            )
        )
    return unexpected, tolerated


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

    Missing keys are not checked here (see :func:`check_checkpoint_fits`).

    Raises:
        CheckpointMismatchError: Names every mismatching key with both
            shapes, so a checkpoint of other kernel sizes or width never
            loads silently.
    """
    own_state = model.state_dict()
    _, wrong_shape, unexpected = compare_state_dicts(state_dict, own_state)
    if wrong_shape:
        raise CheckpointMismatchError(
            describe_mismatch(filename, [], wrong_shape, unexpected, own_state)
        )


def load_state_dict_checked(
    model: nn.Module,
    state_dict: Dict[str, torch.Tensor],
    filename: str = '<checkpoint>',
    set_aside: Optional[List[str]] = None,
    logger: str = 'current',
    allowed_missing: Tuple[str, ...] = (),
) -> Tuple[List, List]:
    """Loads weights after a strict check and reports the differences.

    Args:
        model (nn.Module): The module to load into.
        state_dict (dict): Weights in the module's names.
        filename (str): For messages.
        set_aside (list[str], optional): Keys already removed (logged).
        logger (str): Logger name.
        allowed_missing (tuple[str]): Key prefixes that may be absent.

    Returns:
        tuple[list[str], list[str]]: The (allowed) missing keys and the
        unexpected keys.

    Raises:
        KeyError: If no key matches the model at all.
        CheckpointMismatchError: If any other tensor is missing or any
            tensor has another shape.
    """
    own_keys = set(model.state_dict())
    matched = own_keys & set(state_dict)
    if not matched:
        raise KeyError(
            f'{filename}: none of its {len(state_dict)} keys '
            f'match the model (e.g. {list(state_dict)[:3]} vs '
            f'{sorted(own_keys)[:3]})'
        )
    unexpected, missing = check_checkpoint_fits(
        state_dict, model, filename, allowed_missing
    )
    model.load_state_dict(
        {k: v for k, v in state_dict.items() if k in own_keys}, strict=False
    )
    print_log(
        f'Loaded {len(matched)}/{len(own_keys)} tensors from {filename}',
        logger=logger,
    )
    if missing:
        print_log(
            f'Not in the checkpoint, left as initialised: {missing}',
            logger=logger,
        )
    if unexpected:
        print_log(
            f'Unexpected keys (ignored): {unexpected}', logger=logger, level=30
        )
    if set_aside:
        print_log(f'Keys not used by the backbone: {set_aside}', logger=logger)
    return missing, unexpected


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
        _TRAINING_FORM.search(key) for key in state_dict
    ):
        raise ValueError(
            f'{filename} holds training-form large kernels but the model was '
            'built with deploy=True; build it with deploy=False and call '
            'switch_to_deploy() after loading'
        )
    # The per-output norms of a downstream backbone are new layers when
    # the checkpoint comes from ImageNet; every other tensor must be there.
    output_norms = tuple(f'norm{i}.' for i in model.out_indices)
    return load_state_dict_checked(
        model, state_dict, filename, set_aside, logger, output_norms
    )
