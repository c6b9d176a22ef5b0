"""``torch.load(weights_only=True)`` for SLaK and mmengine checkpoints.

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
import os
import pickle
import urllib.parse
import zipfile
from typing import Any, List, Optional

import numpy as np
import torch

_STATISTICS = ('min', 'max', 'current', 'mean')


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
