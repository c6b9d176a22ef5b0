"""Checkpoint checks of :class:`~.controller.DynamicSparsity` (its
arguments are checked by :class:`~.settings.SparsitySettings`).

Plain torch. Each check raises TypeError / KeyError / ValueError naming the
bad entry, so a damaged checkpoint fails before training starts.
"""

from collections.abc import Mapping
from typing import Optional

import torch

#: Checkpoint entry holding :meth:`DynamicSparsity.state_dict`.
CHECKPOINT_KEY = 'sparse_training'


def check_saved_state(state) -> None:
    """Raises TypeError / KeyError unless ``state`` looks like what
    :meth:`DynamicSparsity.state_dict` returns."""
    where = f'checkpoint[{CHECKPOINT_KEY!r}]'
    if not isinstance(state, Mapping):
        raise TypeError(
            f'{where} must be a dict with masks and counters, got a '
            f'{type(state).__name__}; the checkpoint is damaged or was not '
            'written by SparseTrainingHook'
        )
    for key in ('masks', 'optimizer_steps', 'num_updates'):
        if key not in state:
            raise KeyError(f'{where} has no {key!r} entry')
    masks = state['masks']
    if not isinstance(masks, Mapping):
        raise TypeError(
            f"{where}['masks'] must be a dict of bool tensors by parameter "
            f'name, got a {type(masks).__name__}'
        )
    for name, mask in masks.items():
        if not torch.is_tensor(mask) or mask.dtype != torch.bool:
            raise TypeError(
                f"{where}['masks'][{name!r}] must be a bool tensor, got "
                f'{getattr(mask, "dtype", type(mask).__name__)}'
            )
    for key in ('optimizer_steps', 'num_updates'):
        value = state[key]
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f'{where}[{key!r}] must be an int, got {value!r}')


def state_from_checkpoint(checkpoint, owner: str) -> Mapping:
    """The checked sparse-training state of a checkpoint being resumed.

    Args:
        checkpoint: The loaded checkpoint.
        owner (str): Who resumes it, for the messages.

    Raises:
        TypeError: If the checkpoint is no dict, or the state is damaged.
        KeyError: If the checkpoint has no :data:`CHECKPOINT_KEY` state.
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(
            f'{owner}: the checkpoint being resumed is a '
            f'{type(checkpoint).__name__}, not a dict; it is no '
            'mmengine checkpoint'
        )
    if CHECKPOINT_KEY not in checkpoint:
        raise KeyError(
            f'{owner}: the checkpoint being resumed has no '
            f'{CHECKPOINT_KEY!r} state (masks and update counter), so '
            'sparse training cannot continue exactly; it was probably '
            'saved without this hook. Use load_from instead of resume '
            'to start sparse training from its weights.'
        )
    state = checkpoint[CHECKPOINT_KEY]
    check_saved_state(state)
    return state


def resume_warning(
    state: Mapping, settings: Mapping, module_path: Optional[str], owner: str
) -> Optional[str]:
    """Compares a resumed state with the configured settings.

    Args:
        state (Mapping): The resumed :meth:`DynamicSparsity.state_dict`,
            with the ``module_path`` it was saved under.
        settings (Mapping): The configured keyword arguments.
        module_path (str, optional): The configured module path.
        owner (str): Who resumes, for the error message.

    Returns:
        str | None: A warning naming both values of ``sparsity`` / ``init``
        where they differ (the saved masks win), else None.

    Raises:
        ValueError: If the masks were saved over another module.
    """
    saved_path = state.get('module_path', '') or None
    if saved_path != (module_path or None):
        raise ValueError(
            f'{owner}: the resumed masks are over module_path='
            f'{saved_path!r}, the config says module_path='
            f'{module_path!r}; resume with the same module_path'
        )
    changes = [
        f'{key}={state[key]!r} (checkpoint) vs {key}='
        f'{settings[key]!r} (config)'
        for key in ('sparsity', 'init')
        if key in state and state[key] != settings[key]
    ]
    if not changes:
        return None
    return (
        "resuming keeps the checkpoint's masks, which were built with "
        f'other settings than the config: {"; ".join(changes)}. Training '
        "goes on with the checkpoint's masks; use load_from instead of "
        'resume to build new masks with the config.'
    )
