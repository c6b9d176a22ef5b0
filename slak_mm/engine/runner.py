"""A Runner whose checkpoint loading is strict: no silent partial loads.

mmengine's ``Runner.load_checkpoint`` (behind ``load_from``, ``--resume``
and ``tools/test.py``) loads with ``strict=False``: a checkpoint that does
not fit the model only logs "size mismatch" / "missing keys" warnings and
the run goes on with random weights. :class:`StrictLoadingRunner` checks the
checkpoint first and stops with one message listing every missing tensor
and every tensor of another shape (both shapes), with a hint at the option
that fixes common cases (a deployed checkpoint, another number of classes,
another task). Entries the model does not have (optimizer state, an EMA
copy, ...) are logged and ignored.
"""

import re
from collections import OrderedDict
from typing import Callable, Dict, List, Tuple, Union

import torch
from mmengine.model import is_model_wrapper
from mmengine.registry import RUNNERS
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint, load_state_dict

from ..models.checkpoint import check_checkpoint_fits, extract_state_dict

DEFAULT_REVISE_KEYS = [(r'^module\.', '')]


def revise_state_dict_keys(
    state_dict: Dict[str, torch.Tensor], revise_keys: List[Tuple[str, str]]
) -> 'OrderedDict[str, torch.Tensor]':
    """Applies mmengine's ``revise_keys`` (regex, replacement) pairs.

    The ``_metadata`` attribute (module versions) is kept, as mmengine does.
    """
    metadata = getattr(state_dict, '_metadata', OrderedDict())
    for pattern, replacement in revise_keys:
        state_dict = OrderedDict(
            (re.sub(pattern, replacement, key), value)
            for key, value in state_dict.items()
        )
    state_dict = OrderedDict(state_dict)
    state_dict._metadata = metadata
    return state_dict


def check_resumable(checkpoint: dict, filename: str) -> None:
    """Raises unless the checkpoint holds the runner state ``resume`` needs.

    Raises:
        ValueError: Names the file and the entries it lacks.
    """
    meta = checkpoint.get('meta')
    lacking = []
    if not isinstance(meta, dict):
        lacking.append('meta')
    else:
        lacking += [f'meta.{k}' for k in ('epoch', 'iter') if k not in meta]
    if 'message_hub' not in checkpoint:
        lacking.append('message_hub')
    if lacking:
        raise ValueError(
            f'{filename} cannot be resumed from: it lacks the training state '
            f'{lacking} that the runner saves (it holds '
            f'{sorted(map(str, checkpoint))[:10]}). To start training from '
            f'its weights, use --cfg-options load_from={filename} instead of '
            '--resume'
        )


def load_state_dict_strict(
    model: torch.nn.Module,
    checkpoint: dict,
    filename: str,
    revise_keys: list = DEFAULT_REVISE_KEYS,
) -> List[str]:
    """Loads a checkpoint's weights after :func:`check_checkpoint_fits`.

    Args:
        model (nn.Module): The model (not a DDP wrapper).
        checkpoint (dict): The loaded file.
        filename (str): For messages.
        revise_keys (list): ``(pattern, replacement)`` pairs for the keys.

    Returns:
        list[str]: The checkpoint entries the model does not have (not
        loaded).

    Raises:
        CheckpointMismatchError: If a tensor of the model is missing from
            the checkpoint or has another shape.
    """
    state_dict = revise_state_dict_keys(
        extract_state_dict(checkpoint, filename), revise_keys
    )
    unexpected, _ = check_checkpoint_fits(state_dict, model, filename)
    ignored = set(unexpected)
    fitting = OrderedDict(
        (k, v) for k, v in state_dict.items() if k not in ignored
    )
    fitting._metadata = state_dict._metadata
    load_state_dict(model, fitting, strict=True)
    return unexpected


@RUNNERS.register_module()
class StrictLoadingRunner(Runner):
    """mmengine's Runner with strict, checked checkpoint loading.

    ``tools/train.py`` and ``tools/test.py`` build it unless the config sets
    another ``runner_type``; ``runner_type='StrictLoadingRunner'`` in a
    config gives the toolkits' own tools the same behaviour.
    """

    _resuming = False

    def resume(
        self,
        filename: str,
        resume_optimizer: bool = True,
        resume_param_scheduler: bool = True,
        map_location: Union[str, Callable] = 'default',
    ) -> None:
        self._resuming = True
        try:
            super().resume(
                filename,
                resume_optimizer=resume_optimizer,
                resume_param_scheduler=resume_param_scheduler,
                map_location=map_location,
            )
        finally:
            self._resuming = False

    def load_checkpoint(
        self,
        filename: str,
        map_location: Union[str, Callable] = 'cpu',
        strict: bool = False,
        revise_keys: list = DEFAULT_REVISE_KEYS,
    ) -> dict:
        """Loads a checkpoint after checking that it fits the model.

        Args:
            filename (str): Local path or URL (read with
                ``weights_only=True``, see :mod:`slak_mm.utils.safe_load`).
            map_location (str | Callable): As in ``torch.load``.
            strict (bool): Also refuse entries the model does not have. Missing
                tensors and other shapes are always refused.
            revise_keys (list): ``(pattern, replacement)`` pairs applied to
                the keys, by default stripping a DDP ``module.`` prefix.

        Returns:
            dict: The loaded checkpoint.

        Raises:
            CheckpointMismatchError: If a tensor of the model is missing from
                the checkpoint or has another shape.
            TypeError: If the file holds no dict or its ``state_dict`` is no
                dict.
            ValueError: When resuming, if the file lacks the runner state.
        """
        checkpoint = _load_checkpoint(filename, map_location=map_location)
        model = (
            self.model.module if is_model_wrapper(self.model) else self.model
        )
        state_dict = revise_state_dict_keys(
            extract_state_dict(checkpoint, filename), revise_keys
        )
        # Checked before the hooks run, so that they never act on (and log
        # about) a checkpoint that is then refused.
        unexpected, _ = check_checkpoint_fits(state_dict, model, filename)
        if strict and unexpected:
            raise KeyError(
                f'{filename}: entries not in the model (strict=True): '
                f'{unexpected[:20]}'
            )
        if self._resuming:
            check_resumable(checkpoint, filename)

        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)

        # Hooks may rewrite the weights (EMAHook swaps its copy in and out),
        # so the check runs again on what is loaded.
        unexpected = load_state_dict_strict(
            model, checkpoint, filename, revise_keys
        )
        self._has_loaded = True
        self.logger.info(
            f'Loaded all {len(model.state_dict())} tensors of the model '
            f'from {filename}'
        )
        if unexpected:
            shown = unexpected[:20]
            more = (
                f' ... ({len(unexpected)} in all)'
                if len(unexpected) > 20
                else ''
            )
            self.logger.info(
                f'{filename}: entries not in the model, ignored: {shown}{more}'
            )
        return checkpoint
