"""``torch.load(weights_only=True)`` for SLaK and mmengine checkpoints.

Only the globals such files need are allow-listed: argparse.Namespace (the
release stores its training arguments), mmengine's HistoryBuffer and the numpy
types its logs hold. ``builtins.getattr`` (how HistoryBuffer pickles its
statistics methods) is replaced by a stand-in that resolves nothing but those
methods.
"""

import argparse
import pickle
from typing import Any, List

import numpy as np
import torch

_STATISTICS = ('min', 'max', 'current', 'mean')


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


def safe_torch_load(filename: str, map_location: Any = 'cpu') -> Any:
    """Loads a checkpoint with ``weights_only=True`` and the allow-list.

    Args:
        filename (str): Path of the file.
        map_location: Passed to ``torch.load``.

    Raises:
        FileNotFoundError: If the file does not exist.
        pickle.UnpicklingError: If the file needs a global outside the
            allow-list; the message names the file.
    """
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
