"""The validated settings of :class:`~.controller.DynamicSparsity`.

Plain Python. :class:`SparsitySettings` checks every value when it is
built, so the controller and the mmengine hook (at config time, before
there is a model) share one set of checks; each raises TypeError /
ValueError naming the bad argument and its value.
"""

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence, Union

from .initialization import INIT_MODES, check_sparsity, is_real_number
from .update import check_growth_mode

Patterns = Optional[Union[str, Sequence[str]]]


def _check_int(
    name: str, value, minimum: Optional[int], allow_none: bool
) -> None:
    """Raises unless ``value`` is an int >= ``minimum`` (or None)."""
    if value is None and allow_none:
        return
    expected = 'an int' if minimum is None else f'an int >= {minimum}'
    expected += ' or None' if allow_none else ''
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(
            f'{name} must be {expected}, got {value!r} '
            f'({type(value).__name__})'
        )
    if minimum is not None and value < minimum:
        raise ValueError(f'{name} must be {expected}, got {value}')


def _check_number(name: str, value) -> None:
    if not is_real_number(value):
        raise TypeError(
            f'{name} must be a number, got {value!r} ({type(value).__name__})'
        )


def _check_patterns(name: str, value) -> None:
    """``include`` / ``exclude``: None, a string or a list of strings."""
    if value is None or isinstance(value, str):
        return
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, str) for v in value
    ):
        return
    raise TypeError(
        f'{name} must be None, an fnmatch pattern string or a list of '
        f'them, got {value!r} ({type(value).__name__})'
    )


@dataclass(frozen=True)
class SparsitySettings:
    """Every setting of SLaK's dynamic sparse training, checked.

    Built by :class:`~.controller.DynamicSparsity` from its keyword
    arguments and by :class:`~slak_mm.engine.hooks.SparseTrainingHook` from
    its config, where ``seed`` and ``total_steps`` may still be None (the
    hook fills them from the runner; :meth:`check_complete`).

    Args:
        sparsity (float): Pruned fraction over the masked weights, in
            [0, 1). Unused by ``init='from_weights'``. Defaults to 0.4.
        init (str): ``'snip'`` (needs scores, see :func:`~.snip.snip_scores`),
            ``'erk'``, ``'uniform'`` or ``'from_weights'`` (keep
            ``weight != 0``). Defaults to ``'snip'``.
        growth (str): ``'random'``, ``'gradient'`` or ``'momentum'``.
            Defaults to ``'random'``.
        prune_rate (float): Initial prune rate ``p``, in [0, 1]. Defaults
            to 0.3.
        prune_rate_floor (float): Value ``p`` decays to. Defaults to 0.005.
        update_interval (int, optional): Optimizer steps between mask
            updates; None for static masks. Defaults to 100.
        stop_update_iter (int, optional): No updates from this iteration
            (0-based) on.
        stop_update_epoch (int, optional): No updates from this epoch on.
        total_steps (int, optional): Optimizer steps ``T`` of the cosine;
            needed when ``update_interval`` is set.
        include (str | Sequence[str], optional): ``fnmatch`` patterns over
            parameter names, e.g. ``['*large_kernel.vertical.*',
            '*large_kernel.horizontal.*']`` (the release's ``--only-L``).
        exclude (str | Sequence[str], optional): Patterns to leave dense.
        erk_power (float): ERK power scale. Defaults to 1.
        seed (int, optional): Seed of the random masks and random growth.
            Defaults to 0.
        mask_all_optimizer_state (bool): Also zero every optimizer state
            tensor shaped like a masked weight (Adam's moments included).
            Not in the release. Defaults to False.

    Raises:
        TypeError: For a value of the wrong type (an unknown name raises
            the usual TypeError of a call, naming it).
        ValueError: For a value out of range.
    """

    sparsity: float = 0.4
    init: str = 'snip'
    growth: str = 'random'
    prune_rate: float = 0.3
    prune_rate_floor: float = 0.005
    update_interval: Optional[int] = 100
    stop_update_iter: Optional[int] = None
    stop_update_epoch: Optional[int] = None
    total_steps: Optional[int] = None
    include: Patterns = None
    exclude: Patterns = None
    erk_power: float = 1.0
    seed: Optional[int] = 0
    mask_all_optimizer_state: bool = False

    def __post_init__(self) -> None:
        if self.init not in INIT_MODES:
            raise ValueError(
                f'unknown sparse init mode {self.init!r}; expected one '
                f'of {", ".join(INIT_MODES)}'
            )
        check_growth_mode(self.growth)
        check_sparsity(self.sparsity)
        rate, floor = self.prune_rate, self.prune_rate_floor
        _check_number('prune_rate', rate)
        _check_number('prune_rate_floor', floor)
        if not 0.0 <= floor <= rate <= 1.0:
            raise ValueError(
                'need 0 <= prune_rate_floor <= prune_rate <= 1, got '
                f'prune_rate={rate}, prune_rate_floor={floor}'
            )
        try:
            _check_int('update_interval', self.update_interval, 1, True)
        except ValueError as err:
            raise ValueError(
                f'{err} (a positive number of optimizer steps, or None for '
                'static masks)'
            ) from None
        for name, minimum in (
            ('stop_update_iter', 0),
            ('stop_update_epoch', 0),
            ('total_steps', 1),
            ('seed', None),
        ):
            _check_int(name, getattr(self, name), minimum, True)
        if (
            self.stop_update_iter is not None
            and self.stop_update_epoch is not None
        ):
            raise ValueError(
                'set at most one of stop_update_iter and stop_update_epoch'
            )
        _check_patterns('include', self.include)
        _check_patterns('exclude', self.exclude)
        _check_number('erk_power', self.erk_power)
        if not isinstance(self.mask_all_optimizer_state, bool):
            raise TypeError(
                'mask_all_optimizer_state must be True or False, got '
                f'{self.mask_all_optimizer_state!r}'
            )

    def check_complete(self) -> 'SparsitySettings':
        """Raises unless a controller can run with these settings: ``seed``
        set, and ``total_steps`` set when ``update_interval`` is.

        Returns:
            SparsitySettings: ``self``.
        """
        if self.seed is None:
            raise TypeError('seed must be an int, got None')
        if self.update_interval is not None and self.total_steps is None:
            raise ValueError(
                'total_steps (optimizer steps of the prune-rate cosine) is '
                'needed when update_interval is set'
            )
        return self

    def replace(self, **changes) -> 'SparsitySettings':
        """A copy with ``changes``, checked again."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Every setting by name: the keyword arguments of
        :class:`~.controller.DynamicSparsity`."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self)
        }
