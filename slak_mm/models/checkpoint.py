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


# --------------------------------------------------------------------------
# Checking that a checkpoint fits a model: one implementation for every
# loading path (tools/test.py, load_from, --resume, init_cfg,
# tools/model_converters/deploy.py, the converters and slak_mm.apis).
# --------------------------------------------------------------------------

_DEPLOY_FORM = re.compile(r'large_kernel\.fused_')
_TRAINING_FORM = re.compile(
    r'large_kernel\.(vertical|horizontal|large|small)\.'
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
    hints = []
    if any(_DEPLOY_FORM.search(k) for k in unexpected) and any(
        _TRAINING_FORM.search(k) for k in missing
    ):
        hints.append(
            'the checkpoint is in deploy form (fused large kernels, as '
            'tools/model_converters/deploy.py writes) but the model is in '
            'training form: '
            'build it with deploy=True, e.g. --cfg-options '
            'model.backbone.deploy=True'
        )
    if any(_DEPLOY_FORM.search(k) for k in missing) and any(
        _TRAINING_FORM.search(k) for k in unexpected
    ):
        hints.append(
            'the checkpoint is in training form but the model was built '
            'with deploy=True: drop that option (--cfg-options '
            'model.backbone.deploy=False), or fuse the checkpoint first with '
            'tools/model_converters/deploy.py'
        )
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
        re.search(r'large_kernel\.(vertical|horizontal|large|small)\.', key)
        for key in state_dict
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


# --------------------------------------------------------------------------
# Converting released checkpoints to OpenMMLab 2.x files.
# --------------------------------------------------------------------------

_STAGE_BLOCK = re.compile(r'^stages\.(\d+)\.(\d+)\.')


def strip_module_prefix(
    state_dict: Dict[str, torch.Tensor],
) -> Dict[str, torch.Tensor]:
    """Removes the ``module.`` prefix that DDP-wrapped saves carry."""
    if state_dict and all(k.startswith('module.') for k in state_dict):
        return OrderedDict(
            (k[len('module.') :], v) for k, v in state_dict.items()
        )
    return state_dict


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


def _fit_arch(depths: List[int], channels: List[int]):
    """Finds the named arch and width factor that give these widths."""
    from .slak import SLaK

    for name, setting in SLaK.arch_settings.items():
        if setting['depths'] != depths:
            continue
        base = setting['channels']
        factor = round(channels[-1] / base[-1], 2)
        if [int(c * factor) for c in base] == channels:
            return name, factor
    return dict(depths=depths, channels=channels), 1.0


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
    ours = OrderedDict(
        (release_to_slak_mm_key(k), v)
        for k, v in state_dict.items()
        if not k.startswith('head.')
    )

    def get(key: str) -> torch.Tensor:
        if key not in ours:
            raise KeyError(
                f'{filename}: expected {slak_mm_to_release_key(key)!r} '
                f'(our name {key!r}) in a released SLaK checkpoint'
            )
        return ours[key]

    depth_of: Dict[int, int] = {}
    for key in ours:
        match = _STAGE_BLOCK.match(key)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            depth_of[stage] = max(depth_of.get(stage, 0), block + 1)
    if not depth_of:
        raise KeyError(f'{filename}: no "stages.<i>.<j>." keys; not SLaK')
    num_stages = max(depth_of) + 1
    depths = [depth_of.get(i, 0) for i in range(num_stages)]
    if 0 in depths:
        raise KeyError(f'{filename}: stage(s) without blocks: {depths}')

    stem = get('downsample_layers.0.0.weight')
    in_channels = stem.shape[1]
    channels = [stem.shape[0]] + [
        get(f'downsample_layers.{i}.1.weight').shape[0]
        for i in range(1, num_stages)
    ]
    decompose = 'stages.0.0.large_kernel.vertical.conv.weight' in ours
    long_branch = 'vertical' if decompose else 'large'
    kernel_sizes = [
        get(f'stages.{i}.0.large_kernel.{long_branch}.conv.weight').shape[2]
        for i in range(num_stages)
    ]
    small_kernel = get('stages.0.0.large_kernel.small.conv.weight').shape[2]
    arch, width_factor = _fit_arch(depths, channels)
    head = state_dict.get('head.weight')
    return dict(
        backbone=dict(
            arch=arch,
            width_factor=width_factor,
            kernel_sizes=kernel_sizes,
            small_kernel=small_kernel,
            decompose=decompose,
            in_channels=in_channels,
            layer_scale_init_value=(
                1e-6 if 'stages.0.0.gamma' in ours else 0.0
            ),
        ),
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
    from .slak import SLaK

    state_dict = strip_module_prefix(state_dict)
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
    backbone, _ = prepare_backbone_state_dict(state_dict, model, '', filename)
    _require_complete(backbone, model, filename)
    head_weight = state_dict['head.weight']
    if head_weight.shape[1] != info['channels'][-1]:
        raise ValueError(
            f'{filename}: head.weight has shape {tuple(head_weight.shape)}'
            f' but the last stage has {info["channels"][-1]} channels'
        )
    converted = OrderedDict((f'backbone.{k}', v) for k, v in backbone.items())
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
    from .slak import SLaK

    state_dict = strip_module_prefix(state_dict)
    info = infer_release_config(state_dict, filename)
    model = SLaK(
        **info['backbone'], out_indices=tuple(range(len(info['channels'])))
    )
    backbone, _ = prepare_backbone_state_dict(state_dict, model, '', filename)
    _require_complete(backbone, model, filename, allowed_missing=('norm',))
    converted = OrderedDict((f'backbone.{k}', v) for k, v in backbone.items())
    return converted, info


def convert_release_downstream(
    checkpoint: dict, filename: str = '<checkpoint>'
) -> Tuple[dict, List[str]]:
    """Converts a released mmseg 0.x / mmdet 2.x checkpoint to our names.

    ``backbone.*`` keys are renamed with :data:`RELEASE_KEY_RENAMES`
    (``norm0..norm3`` keep their names); every other key (neck, heads) is
    kept as is: UperNet/FCN heads of mmseg 0.x -> 1.x and FPN/RPN/Cascade
    RoI heads of mmdet 2.x -> 3.x use the same module names. Only
    ``state_dict`` and ``meta`` are kept; ``meta['CLASSES']`` and
    ``meta['PALETTE']`` are copied to ``meta['dataset_meta']`` as 2.x tools
    expect.

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
    state_dict = strip_module_prefix(checkpoint['state_dict'])
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
    meta = dict(checkpoint.get('meta') or {})
    dataset_meta = dict(meta.get('dataset_meta') or {})
    for old, new in (('CLASSES', 'classes'), ('PALETTE', 'palette')):
        if old in meta and new not in dataset_meta:
            dataset_meta[new] = meta[old]
    if dataset_meta:
        meta['dataset_meta'] = dataset_meta
    dropped = sorted(set(checkpoint) - {'state_dict', 'meta'})
    if dropped:
        notes.append(f'dropped top-level entries {dropped}')
    return dict(meta=meta, state_dict=converted), notes
