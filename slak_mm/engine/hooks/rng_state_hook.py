"""The mmengine hook that makes a resumed run draw the random numbers the
uninterrupted run would have drawn.

Stochastic depth, dropout and the data pipelines of in-process loaders
draw from the global generators (:mod:`slak_mm.utils.rng`). mmengine
re-seeds them when a run starts and replays the data loader's batches on
resume, but does not save them: after a resume the model draws other
numbers than the uninterrupted run, and the weights drift apart.
"""

import logging
from typing import List, Optional

from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop

from slak_mm.utils.rng import get_rng_states, set_rng_states

#: The checkpoint entry: ``dict(world_size=int, ranks=[states of rank 0,
#: rank 1, ...])``, each as :func:`slak_mm.utils.rng.get_rng_states`.
CHECKPOINT_KEY = 'rng_states'


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Saves every rank's generator states in checkpoints and restores
    them on resume where the uninterrupted run had them.

    Saving: the states at a checkpoint are those the next training
    iteration (or epoch) starts from. Under DDP only rank 0 writes the
    checkpoint (``Runner.save_checkpoint`` is ``master_only``), so every
    rank's states are gathered just before ``CheckpointHook`` saves
    (``all_gather_object``, only when it is about to save) and rank 0
    stores them all; one process stores its own.

    Validation draws from the same generators (e.g. its data loader's seed)
    but a resumed run skips the validation that followed the checkpoint, so
    the states are set back after every validation: training draws the
    same numbers whether or not and how often it validates.

    Restoring (``--resume`` only; ``load_from`` and test loads do not touch
    the generators): each rank restores its own saved states right before
    the first batch after the resume point is drawn, that is after
    mmengine's reseeding, its model and loader building and, in an
    ``IterBasedTrainLoop``, after it advances the data iterator past the
    batches already trained on (those draws belong to the replay, not the
    uninterrupted run). Other loops restore in ``before_train_epoch``.

    When the number of processes changed, the run cannot repeat the
    uninterrupted one (each rank sees other data); a warning says so, the
    ranks that exist in the checkpoint restore their own states and newer
    ranks keep the states the runner seeded them with.
    """

    # Before CheckpointHook (VERY_LOW, 90), which saves in the same
    # after_train_iter / after_train_epoch / after_val_epoch: the gather
    # must be done by every rank before rank 0 saves. After LoggerHook
    # (BELOW_NORMAL, 60) and the other hooks of those events.
    priority = 85

    def __init__(self) -> None:
        self._gathered: Optional[List[dict]] = None
        self._states_before_val: Optional[dict] = None
        self._resumed_entry: Optional[dict] = None

    # ------------------------------------------------------------------
    # Saving
    # ------------------------------------------------------------------
    def before_train_iter(self, runner, batch_idx: int, data_batch=None):
        self._gathered = None

    def after_train_iter(
        self, runner, batch_idx: int, data_batch=None, outputs=None
    ) -> None:
        """Gathers the ranks' states if a checkpoint is saved now."""
        # CheckpointHook.after_train_iter's condition (mmengine 0.10).
        if _distributed() and any(
            not hook.by_epoch
            and (
                hook.every_n_train_iters(
                    runner, hook.interval, hook.save_begin
                )
                or (hook.save_last and hook.is_last_train_iter(runner))
            )
            for hook in _checkpoint_hooks(runner)
        ):
            self._gathered = all_gather_object(get_rng_states())

    def after_train_epoch(self, runner) -> None:
        """Gathers the ranks' states if a checkpoint is saved now."""
        # CheckpointHook.after_train_epoch's condition (mmengine 0.10).
        if _distributed() and any(
            hook.by_epoch
            and (
                hook.every_n_epochs(runner, hook.interval, hook.save_begin)
                or (hook.save_last and hook.is_last_train_epoch(runner))
            )
            for hook in _checkpoint_hooks(runner)
        ):
            self._gathered = all_gather_object(get_rng_states())

    def before_val(self, runner) -> None:
        self._states_before_val = get_rng_states()

    def after_val_epoch(self, runner, metrics=None) -> None:
        """Gathers the training states if a best checkpoint may be saved
        now (``save_best``); validation is rare, so always then."""
        if (
            _distributed()
            and self._states_before_val is not None
            and any(hook.save_best for hook in _checkpoint_hooks(runner))
        ):
            self._gathered = all_gather_object(self._states_before_val)

    def after_val(self, runner) -> None:
        """Sets the generators back to where training left them."""
        if self._states_before_val is not None:
            set_rng_states(self._states_before_val)
            self._states_before_val = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Stores the states of every rank (rank 0 saves)."""
        _, world_size = get_dist_info()
        if world_size == 1:
            ranks = [self._training_states()]
        elif self._gathered is not None:
            ranks = self._gathered
        else:  # a save CheckpointHook did not announce: rank 0's own only
            ranks = [self._training_states()]
            self._log(
                "a checkpoint is saved outside CheckpointHook's schedule, "
                "so it holds only rank 0's generator states; the other "
                'ranks resume from it with freshly seeded ones',
                logging.WARNING,
            )
        checkpoint[CHECKPOINT_KEY] = dict(world_size=world_size, ranks=ranks)

    # ------------------------------------------------------------------
    # Restoring
    # ------------------------------------------------------------------
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keeps the saved states of a resumed checkpoint."""
        if not runner._resume:  # load_from / testing: weights only
            return
        entry = checkpoint.get(CHECKPOINT_KEY)
        if entry is None:
            self._log(
                'the resumed checkpoint holds no generator states (saved '
                'without this hook): stochastic depth, dropout and random '
                'augmentations draw other numbers than an uninterrupted run',
                logging.WARNING,
            )
        self._resumed_entry = entry

    def before_train_epoch(self, runner) -> None:
        """Restores the resumed states before the next batch is drawn."""
        self._gathered = None
        if self._resumed_entry is None:
            return
        states = self._own_saved_states(self._resumed_entry)
        self._resumed_entry = None
        if states is None:
            return
        loop = runner.train_loop
        if isinstance(loop, IterBasedTrainLoop):
            loop.dataloader_iterator = _RestoreBeforeBatch(
                loop,
                skipped_batches=loop.iter,
                restore=lambda: self._restore(states),
            )
        else:
            self._restore(states)

    # ------------------------------------------------------------------
    # Helpers
    # ------------------------------------------------------------------
    def _training_states(self) -> dict:
        """The states training goes on from (during validation, those
        from before it)."""
        if self._states_before_val is not None:
            return self._states_before_val
        return get_rng_states()

    def _own_saved_states(self, entry: dict) -> Optional[dict]:
        """This rank's states in the checkpoint entry (None if it has
        none); warns once when the number of processes changed."""
        rank, world_size = get_dist_info()
        saved_world_size = entry['world_size']
        ranks = entry['ranks']
        if saved_world_size != world_size:
            restored = min(world_size, len(ranks))
            message = (
                'the checkpoint was saved with world size '
                f'{saved_world_size}, this run has {world_size}: each '
                'process sees other batches, so the run cannot repeat the '
                f'uninterrupted one. Ranks 0..{restored - 1} restore their '
                'own saved generator states'
            )
            if world_size > restored:
                message += (
                    f'; ranks {restored}..{world_size - 1} keep the states '
                    'the runner seeded'
                )
            self._log(message, logging.WARNING)
        return ranks[rank] if rank < len(ranks) else None

    def _restore(self, states: dict) -> None:
        for problem in set_rng_states(states):
            self._log(problem, logging.WARNING)

    def _log(self, message: str, level: int = logging.INFO) -> None:
        print_log(
            f'{type(self).__name__}: {message}', logger='current', level=level
        )


def _distributed() -> bool:
    return get_dist_info()[1] > 1


def _checkpoint_hooks(runner) -> List[CheckpointHook]:
    return [hook for hook in runner.hooks if isinstance(hook, CheckpointHook)]


class _RestoreBeforeBatch:
    """Stands in for an ``IterBasedTrainLoop``'s data iterator until the
    first batch after a resume: passes ``skipped_batches`` batches through
    (mmengine's replay), then calls ``restore`` before drawing the next and
    puts the loop's own iterator back."""

    def __init__(
        self, loop: IterBasedTrainLoop, skipped_batches: int, restore
    ):
        self._loop = loop
        self._iterator = loop.dataloader_iterator
        self._skipped_batches = skipped_batches
        self._restore = restore

    def __iter__(self):
        return self

    def __next__(self):
        if self._skipped_batches > 0:
            self._skipped_batches -= 1
            return next(self._iterator)
        self._restore()
        self._loop.dataloader_iterator = self._iterator
        return next(self._iterator)
