"""The mmengine hook that keeps a sparse checkpoint's zeros while
fine-tuning."""

from typing import Optional, Sequence, Union

from mmengine.registry import HOOKS

from .sparse_training_hook import SparseTrainingHook


@HOOKS.register_module()
class StaticSparsityHook(SparseTrainingHook):
    """Keeps the zeros of a sparse checkpoint while fine-tuning.

    :class:`SparseTrainingHook` with ``init='from_weights'`` and no mask
    updates: the masks are ``weight != 0`` of the loaded weights (load them
    with ``load_from`` or the backbone's ``init_cfg``), layers without zeros
    stay dense, and masked weights (and SGD's momentum buffer) are zeroed
    after every optimizer step.

    Args:
        module_path (str, optional): Attribute path of the module whose
            zeros are kept. Defaults to ``'backbone'``; None for the whole
            model.
        include (str | Sequence[str], optional): ``fnmatch`` patterns over
            parameter names relative to that module.
        exclude (str | Sequence[str], optional): Patterns to leave dense.
    """

    def __init__(
        self,
        module_path: Optional[str] = 'backbone',
        include: Optional[Union[str, Sequence[str]]] = None,
        exclude: Optional[Union[str, Sequence[str]]] = None,
    ) -> None:
        super().__init__(
            module_path=module_path,
            sparsity=0.0,
            init='from_weights',
            update_interval=None,
            include=include,
            exclude=exclude,
        )
