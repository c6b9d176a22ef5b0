"""Checkpoint loading, in one place: read, extract, check, load.

- **Read** (:func:`safe_torch_load`): ``torch.load(weights_only=True)`` for
  SLaK and mmengine checkpoints, also behind mmengine's ``CheckpointLoader``
  (:func:`register_mmengine_checkpoint_loaders`).
- **Extract** (:func:`extract_state_dict`): one rule for the wrappers
  (``state_dict`` / ``model`` entries, DDP's ``module.`` prefix).
- **Check** (:func:`check_checkpoint_fits`): every tensor of the model must
  be there with its shape; one message lists every key that is not, with
  both shapes and a hint at the option that fixes common cases.
- **Load** (:func:`load_state_dict_strict`, :func:`load_checkpoint_strict`),
  and :func:`make_mmengine_loading_strict`, which routes mmengine's own
  ``load_state_dict`` (behind ``load_from``, ``--resume``, the test scripts
  of every toolkit, whole-model ``Pretrained`` init, ``EMAHook`` and the
  toolkits' inference APIs) through the same check for SLaK models.

Reading:

Only the globals such files need are allow-listed: argparse.Namespace (the
release stores its training arguments), mmengine's HistoryBuffer and the numpy
types its logs hold. ``builtins.getattr`` (how HistoryBuffer pickles its
statistics methods) is replaced by a stand-in that resolves nothing but those
methods.

Every read passes ``weights_only=True`` explicitly (so
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` cannot turn it off), and files that
are no checkpoint at all fail with a message naming the file and the problem.
"""

import argparse
import functools
import os
import pickle
import re
import threading
import urllib.parse
import zipfile
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

_STATISTICS = ('min', 'max', 'current', 'mean')
_last_read = threading.local()


class CheckpointFileError(RuntimeError):
    """A file that cannot be read as a checkpoint; the message names it."""


def _history_buffer_getattr(owner: Any, name: str) -> Any:
    """Stand-in for ``builtins.getattr`` inside checkpoints."""
    from mmengine.logging import HistoryBuffer

    if owner is HistoryBuffer and name in _STATISTICS:
        return getattr(owner, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({owner!r}, {name!r}); only '
        f'HistoryBuffer.{{{", ".join(_STATISTICS)}}} are allowed'
    )


def checkpoint_safe_globals() -> List[Any]:
    """The allow-list for ``torch.serialization.safe_globals``."""
    from mmengine.logging import HistoryBuffer

    np_core = getattr(np, '_core', None) or np.core
    multiarray = np_core.multiarray
    entries: List[Any] = [
        argparse.Namespace,
        HistoryBuffer,
        (_history_buffer_getattr, 'builtins.getattr'),
        np.ndarray,
        np.dtype,
    ]
    # Files written under numpy 1.x name numpy.core, under 2.x numpy._core.
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        entries.append((multiarray._reconstruct, f'{module}._reconstruct'))
        entries.append((multiarray.scalar, f'{module}.scalar'))
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        for name in (
            'Float64DType',
            'Float32DType',
            'Float16DType',
            'Int64DType',
            'Int32DType',
            'BoolDType',
        ):
            if hasattr(dtypes, name):
                entries.append(getattr(dtypes, name))
    return entries


def register_checkpoint_safe_globals() -> None:
    """Allow-lists the globals process-wide.

    This lets mmengine's own ``torch.load`` calls (``--resume``,
    ``load_from``) read its checkpoints with the default ``weights_only=True``
    of torch >= 2.6.
    """
    torch.serialization.add_safe_globals(checkpoint_safe_globals())


def _unreadable_reason(filename: str) -> Optional[str]:
    """Why a file cannot be a ``torch.save`` file, or None if it may be.

    ``torch.load`` reports these cases with messages that do not say what is
    wrong (``EOFError``, ``KeyError``, miniz errors), so they are recognised
    here first: an empty file, a truncated zip archive (a checkpoint whose
    write was interrupted), a zip archive that ``torch.save`` did not write,
    and a file that is not a pickle at all (text, images, ...).
    """
    size = os.path.getsize(filename)
    if size == 0:
        return 'is empty (0 bytes)'
    with open(filename, 'rb') as file:
        head = file.read(64)
    if head.startswith(b'PK'):
        if not zipfile.is_zipfile(filename):
            return (
                f'is a truncated or damaged zip archive ({size} bytes, no '
                'central directory); it was probably being written when the '
                'process was killed'
            )
        try:
            with zipfile.ZipFile(filename) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as err:
            return f'is a damaged zip archive ({err})'
        if not any(n == 'data.pkl' or n.endswith('/data.pkl') for n in names):
            return (
                'is a zip archive but not a PyTorch checkpoint (no data.pkl; '
                f'it holds {names[:5]})'
            )
        return None
    if head[:1] == b'\x80':
        return None  # the pre-1.6 pickle-based torch.save format
    try:
        text = head.decode('utf-8')
    except UnicodeDecodeError:
        return f'is not a PyTorch checkpoint (it starts with {head[:16]!r})'
    return (
        'is a text file, not a PyTorch checkpoint (it starts with '
        f'{text[:40]!r})'
    )


def safe_torch_load(filename: str, map_location: Any = 'cpu') -> Any:
    """Loads a checkpoint with ``weights_only=True`` and the allow-list.

    ``weights_only=True`` is passed explicitly, so loading stays safe even
    when ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` is set.

    Args:
        filename (str): Path of the file.
        map_location: Passed to ``torch.load``.

    Raises:
        FileNotFoundError: If the file does not exist.
        CheckpointFileError: If the file is empty, truncated, text, a zip
            archive that is no checkpoint, or otherwise unreadable; the
            message names the file and the problem.
        pickle.UnpicklingError: If the file needs a global outside the
            allow-list; the message names the file.
    """
    filename = os.fspath(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'checkpoint file {filename} does not exist')
    reason = _unreadable_reason(filename)
    if reason is not None:
        raise CheckpointFileError(f'{filename} {reason}')
    # mmengine loads a file's weights into the model without its name; the
    # strict check names the file it was read from.
    _last_read.filename = filename
    # The context removes what it adds on exit, so it must not add entries
    # that register_checkpoint_safe_globals() made process-wide.
    registered = torch.serialization.get_safe_globals()
    needed = [g for g in checkpoint_safe_globals() if g not in registered]
    try:
        with torch.serialization.safe_globals(needed):
            return torch.load(
                filename, map_location=map_location, weights_only=True
            )
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(
            f'{filename} needs a global outside the SLaK checkpoint '
            f'allow-list, so it was not loaded: {err}'
        ) from err
    except Exception as err:
        raise CheckpointFileError(
            f'{filename} could not be read as a PyTorch checkpoint '
            f'({type(err).__name__}: {err})'
        ) from err


def load_from_safe_local(filename: str, map_location: Any = None) -> Any:
    """mmengine ``CheckpointLoader`` scheme for local paths (mmengine logs
    the part of the name after ``load_from_`` as the backend)."""
    return safe_torch_load(os.path.expanduser(filename), map_location)


def load_url_safely(
    url: str,
    map_location: Any = None,
    model_dir: Optional[str] = None,
    progress: bool = False,
) -> Any:
    """Downloads a checkpoint once (torch hub cache) and loads it safely.

    ``torch.hub.load_state_dict_from_url``, which mmengine uses for URLs,
    defaults to ``weights_only=False``; this loads the cached file with
    :func:`safe_torch_load` instead.
    """
    if model_dir is None:
        model_dir = os.path.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    name = os.path.basename(urllib.parse.urlparse(url).path)
    cached = os.path.join(model_dir, name)
    if not os.path.exists(cached):
        torch.hub.download_url_to_file(url, cached, progress=progress)
    return safe_torch_load(cached, map_location)


def load_from_safe_http(
    filename: str, map_location: Any = None, model_dir: Optional[str] = None
) -> Any:
    """mmengine ``CheckpointLoader`` scheme for http(s) URLs; rank 0
    downloads first, as mmengine's own loader does."""
    from mmengine.dist import get_dist_info

    rank, world_size = get_dist_info()
    if rank == 0:
        checkpoint = load_url_safely(filename, map_location, model_dir)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            checkpoint = load_url_safely(filename, map_location, model_dir)
    return checkpoint


def register_mmengine_checkpoint_loaders() -> None:
    """Routes mmengine's local and http(s) checkpoint reads through
    :func:`safe_torch_load`.

    mmengine's ``CheckpointLoader`` (behind ``load_from``, ``--resume``,
    ``init_cfg=dict(type='Pretrained')`` and the toolkits' ``init_model``
    / inferencers) calls ``torch.load`` without ``weights_only``, so
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` would make it unpickle arbitrary
    code. Replacing its schemes makes every such read
    ``weights_only=True`` with the allow-list, and bad files fail with a
    message naming the file.
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_safe_local, force=True
    )
    CheckpointLoader.register_scheme(
        prefixes=('http://', 'https://'),
        loader=load_from_safe_http,
        force=True,
    )


def last_read_checkpoint() -> str:
    """The file this thread's last :func:`safe_torch_load` read."""
    return getattr(_last_read, 'filename', '<checkpoint>')


# --------------------------------------------------------------------------
# Extracting the weights.
# --------------------------------------------------------------------------

# Wrapper entries tried in order: OpenMMLab files, then the released ones.
_WEIGHT_ENTRIES = ('state_dict', 'model')
# DDP-wrapped saves prefix every key (mmengine strips it the same way).
_DDP_PREFIX = 'module.'


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


def _require_mapping(entry, filename: str, name: str) -> Dict:
    if not isinstance(entry, dict):
        raise TypeError(
            f'{filename}: its {name!r} entry is a {type(entry).__name__} '
            'where a dict mapping parameter names to tensors belongs'
        )
    return entry


def strip_ddp_prefix(
    state_dict: Dict[str, torch.Tensor],
) -> 'OrderedDict[str, torch.Tensor]':
    """Removes DDP's ``module.`` from every key that starts with it.

    The ``_metadata`` attribute (module versions) is kept.
    """
    stripped = OrderedDict(
        (k[len(_DDP_PREFIX) :] if k.startswith(_DDP_PREFIX) else k, v)
        for k, v in state_dict.items()
    )
    stripped._metadata = getattr(state_dict, '_metadata', OrderedDict())
    return stripped


def extract_state_dict(
    checkpoint, filename: str = '<checkpoint>', state_key: Optional[str] = None
) -> 'OrderedDict[str, torch.Tensor]':
    """Finds the weights in a loaded checkpoint object.

    Args:
        checkpoint: What ``torch.load`` returned.
        filename (str): For error messages.
        state_key (str, optional): Take this entry (e.g. ``'model_ema'``).
            By default ``state_dict`` (OpenMMLab), then ``model`` (release),
            then the object itself if it maps names to tensors.

    Returns:
        OrderedDict: The weights, DDP's ``module.`` prefix stripped.

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
        weights = _require_mapping(checkpoint[state_key], filename, state_key)
        return strip_ddp_prefix(weights)
    for entry in _WEIGHT_ENTRIES:
        if entry in checkpoint:
            weights = _require_mapping(checkpoint[entry], filename, entry)
            return strip_ddp_prefix(weights)
    if checkpoint and all(
        isinstance(v, torch.Tensor) for v in checkpoint.values()
    ):
        return strip_ddp_prefix(checkpoint)
    raise KeyError(
        f'{filename}: found no weights; expected a "state_dict" '
        f'or "model" entry, got keys {sorted(map(str, checkpoint))[:10]}'
    )


# --------------------------------------------------------------------------
# The fit report: which tensors of the model a checkpoint lacks or holds in
# another shape, and what probably went wrong.
# --------------------------------------------------------------------------

_DEPLOY_FORM = re.compile(r'large_kernel\.fused_')
TRAINING_FORM = re.compile(
    r'large_kernel\.(vertical|horizontal|large|small)\.'
)
# (form of the checkpoint's extra keys, form of the model's missing keys,
# what to do about it).
_FORM_HINTS = (
    (
        _DEPLOY_FORM,
        TRAINING_FORM,
        'the checkpoint is in deploy form (fused large kernels, as '
        'tools/model_converters/deploy.py writes) but the model is in '
        'training form: build it with deploy=True, e.g. --cfg-options '
        'model.backbone.deploy=True',
    ),
    (
        TRAINING_FORM,
        _DEPLOY_FORM,
        'the checkpoint is in training form but the model was built '
        'with deploy=True: drop that option (--cfg-options '
        'model.backbone.deploy=False), or fuse the checkpoint first with '
        'tools/model_converters/deploy.py',
    ),
)
# Keys of the released SLaK module names (convert with the converters).
_RELEASE_MARKERS = (
    '.LoRA1.',
    '.LoRA2.',
    '.small_conv.',
    '.lkb_origin.',
    '.pwconv1.',
    '.pwconv2.',
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
# Buffers that hold no weights; mmengine and torch tolerate their absence.
_OPTIONAL_BUFFERS = ('num_batches_tracked',)
_MAX_LISTED = 30


def is_release_state_dict(state_dict: Dict[str, Any]) -> bool:
    """Whether the keys use the released SLaK module names."""
    return any(
        marker in key for key in state_dict for marker in _RELEASE_MARKERS
    )


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
        tuple: ``missing`` (model keys absent from ``state_dict``, buffers
        without weights such as BN's ``num_batches_tracked`` excepted),
        ``wrong_shape`` (``(key, checkpoint shape, model shape)``; a value
        that is not a tensor counts, with its type name as shape) and
        ``unexpected`` (checkpoint keys the model does not have).
    """
    missing, wrong_shape = [], []
    for key, mine in own_state.items():
        if key not in state_dict:
            if not key.endswith(_OPTIONAL_BUFFERS):
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


# --------------------------------------------------------------------------
# Loading.
# --------------------------------------------------------------------------


def _log(message: str, logger: str = 'current', level: int = 20) -> None:
    try:
        from mmengine.logging import print_log
    except ImportError:  # plain torch
        if level >= 30:
            print(message)
        return
    print_log(message, logger=logger, level=level)


def load_state_dict_strict(
    model: nn.Module,
    state_dict: Dict[str, torch.Tensor],
    filename: str = '<checkpoint>',
    allowed_missing: Tuple[str, ...] = (),
    logger: str = 'current',
) -> Tuple[List[str], List[str]]:
    """Loads weights after :func:`check_checkpoint_fits`.

    Args:
        model (nn.Module): The module to load into (not a DDP wrapper).
        state_dict (dict): Weights in the module's names.
        filename (str): For messages.
        allowed_missing (tuple[str]): Key prefixes that may be absent (left
            as initialised).
        logger (str): mmengine logger name.

    Returns:
        tuple[list[str], list[str]]: The (allowed) missing keys and the
        entries the model does not have (logged, not loaded).

    Raises:
        CheckpointMismatchError: If a tensor of the model is missing or has
            another shape; if no key matches at all, says so.
    """
    own_keys = set(model.state_dict())
    if own_keys and not own_keys & set(state_dict):
        raise CheckpointMismatchError(
            f'{filename}: none of its {len(state_dict)} keys match the model '
            f'(e.g. {list(state_dict)[:3]} vs {sorted(own_keys)[:3]})'
        )
    unexpected, missing = check_checkpoint_fits(
        state_dict, model, filename, allowed_missing
    )
    fitting = OrderedDict(
        (k, v) for k, v in state_dict.items() if k in own_keys
    )
    fitting._metadata = getattr(state_dict, '_metadata', OrderedDict())
    model.load_state_dict(fitting, strict=False)
    _log(
        f'Loaded {len(fitting)}/{len(own_keys)} tensors from {filename}',
        logger,
    )
    if missing:
        _log(f'Not in {filename}, left as initialised: {missing}', logger)
    if unexpected:
        more = (
            f' ... ({len(unexpected)} in all)' if len(unexpected) > 20 else ''
        )
        _log(
            f'{filename}: entries not in the model, ignored: '
            f'{unexpected[:20]}{more}',
            logger,
            level=30,
        )
    return missing, unexpected


def load_checkpoint_strict(
    model: nn.Module,
    filename: str,
    map_location: Any = 'cpu',
    state_key: Optional[str] = None,
    logger: str = 'current',
) -> dict:
    """Reads a checkpoint and loads every tensor of the model from it.

    Args:
        model (nn.Module): A model built from the matching config.
        filename (str): Path of the ``.pth`` file.
        map_location: Passed to ``torch.load``.
        state_key (str, optional): Entry holding the weights; by default
            ``state_dict``, then ``model``.
        logger (str): mmengine logger name.

    Returns:
        dict: The loaded checkpoint (all its top-level entries).

    Raises:
        CheckpointMismatchError: If a tensor of the model is missing or has
            another shape; lists every such key with both shapes.
        CheckpointFileError: If the file is not a readable checkpoint.
    """
    checkpoint = safe_torch_load(filename, map_location=map_location)
    state_dict = extract_state_dict(checkpoint, filename, state_key)
    load_state_dict_strict(model, state_dict, filename, logger=logger)
    return checkpoint


# --------------------------------------------------------------------------
# mmengine's own loading, strict for SLaK models.
# --------------------------------------------------------------------------

# A module class that sets this attribute to True makes every mmengine load
# into a model holding it strict (SLaK does).
STRICT_LOADING_ATTR = 'requires_strict_checkpoint_loading'


def requires_strict_loading(model: nn.Module) -> bool:
    """Whether ``model`` holds a module that asks for strict loading."""
    return any(
        getattr(type(module), STRICT_LOADING_ATTR, False)
        for module in model.modules()
    )


def make_mmengine_loading_strict() -> None:
    """Checks every load of mmengine's ``load_state_dict`` into a SLaK model.

    mmengine loads with ``strict=False`` everywhere a config names weights:
    ``Runner.load_checkpoint`` (``load_from``, ``--resume``, the
    ``tools/test.py`` of mmseg, mmdet and mmpretrain, ``mim test``),
    ``init_cfg=dict(type='Pretrained')`` on a whole model, ``EMAHook`` and the
    toolkits' inference APIs (``init_model``, ``init_detector``,
    ``get_model``, ``MMSegInferencer``, ``DetInferencer``): a checkpoint that
    does not fit only logs warnings. They all end in
    ``mmengine.runner.checkpoint.load_state_dict``, looked up by name at
    call time. This wraps it, once, so that a model holding a module with
    ``requires_strict_checkpoint_loading = True`` (SLaK) gets
    :func:`check_checkpoint_fits` first; other models load as before.
    Entries the model does not have are still logged and ignored.
    """
    from mmengine.model import BaseTTAModel, is_model_wrapper
    from mmengine.runner import checkpoint as mmengine_checkpoint

    original = mmengine_checkpoint.load_state_dict
    if getattr(original, '_slak_mm_strict', False):
        return

    @functools.wraps(original)
    def load_state_dict(module, state_dict, strict=False, logger=None):
        target = module
        # Unwrapped as mmengine's loader does.
        while is_model_wrapper(target) or isinstance(target, BaseTTAModel):
            target = target.module
        if not requires_strict_loading(target):
            return original(module, state_dict, strict=strict, logger=logger)
        filename = last_read_checkpoint()
        unexpected, _ = check_checkpoint_fits(state_dict, target, filename)
        ignored = set(unexpected)
        fitting = OrderedDict(
            (k, v) for k, v in state_dict.items() if k not in ignored
        )
        fitting._metadata = getattr(state_dict, '_metadata', OrderedDict())
        original(module, fitting, strict=strict, logger=logger)
        _log(
            f'Loaded all {len(target.state_dict())} tensors of the model '
            f'from {filename}',
            logger or 'current',
        )
        if unexpected:
            more = (
                f' ... ({len(unexpected)} in all)'
                if len(unexpected) > 20
                else ''
            )
            _log(
                f'{filename}: entries not in the model, ignored: '
                f'{unexpected[:20]}{more}',
                logger or 'current',
                level=30,
            )

    load_state_dict._slak_mm_strict = True
    mmengine_checkpoint.load_state_dict = load_state_dict
