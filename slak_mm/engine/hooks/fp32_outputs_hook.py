"""The mmengine hook that hands the evaluator fp32 predictions from a
validation or test loop running under autocast (``fp16=True``)."""

import sys
from typing import Any, Callable, List

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from mmengine.structures import BaseDataElement


def to_fp32(value: Any) -> Any:
    """``value`` with every bf16/fp16 tensor in it cast to fp32.

    Tensors nested in tuples, lists, dicts and the data fields of mmengine
    data elements (changed in place) are cast; other values (integer
    labels, masks, fp64 tensors) are returned unchanged.
    """
    if isinstance(value, torch.Tensor):
        reduced = value.dtype in (torch.bfloat16, torch.float16)
        return value.float() if reduced else value
    if isinstance(value, (tuple, list)):
        return type(value)(to_fp32(v) for v in value)
    if isinstance(value, dict):
        return {k: to_fp32(v) for k, v in value.items()}
    if isinstance(value, BaseDataElement):
        for key, field in list(value.items()):
            setattr(value, key, to_fp32(field))
    return value


@HOOKS.register_module()
class FP32OutputsHook(Hook):
    """Keeps a mixed-precision validation or test run's outputs in fp32.

    mmengine's ``ValLoop`` and ``TestLoop`` with ``fp16=True`` run each
    step under ``autocast`` (fp16 on CUDA, bf16 on the CPU), which changes
    how the model computes, and also what it returns: some predictions
    come out in the autocast dtype (mmpretrain's ``pred_score``, for one),
    and a bf16 tensor in a ``--out`` pickle cannot even become a numpy
    array. For the loops that run under autocast this hook

    - casts the bf16/fp16 tensors of ``val_step`` / ``test_step`` outputs
      to fp32 before the evaluator (metrics, dumps) sees them; labels,
      masks and fp64 values stay as they are;
    - on a machine without CUDA, gives an mmdet detector's RoI feature
      extractors fp32 features (forward pre-hook) and its dense, bbox and
      mask heads fp32 outputs (forward hook): mmcv's CPU kernels of
      RoIAlign and NMS take no bf16 ('"ROIAlign_forward" not implemented
      for BFloat16'). The backbone, the neck and the heads' own layers
      still run in bf16. Other fp32-only mmcv ops (e.g. deformable convs,
      not used by the shipped configs) are not covered.

    Loops without autocast are left alone, so the hook may stay in a
    config. ``tools/test.py`` adds it when it tests under autocast
    (``--amp`` or ``test_cfg.fp16``); with the toolkits' own scripts, add
    it to the config::

        custom_hooks = [dict(type='FP32OutputsHook')]
        test_cfg = dict(type='TestLoop', fp16=True)

    Everything is undone after the loop.
    """

    priority = 'NORMAL'

    def __init__(self) -> None:
        self._undo: List[Callable[[], None]] = []

    def before_val(self, runner) -> None:
        self._enter(runner, runner.val_loop, 'val_step')

    def after_val(self, runner) -> None:
        self._exit()

    def before_test(self, runner) -> None:
        self._enter(runner, runner.test_loop, 'test_step')

    def after_test(self, runner) -> None:
        self._exit()

    def _enter(self, runner, loop, step_name: str) -> None:
        self._exit()  # a loop that failed left its changes
        if not getattr(loop, 'fp16', False):
            return
        self._wrap_step(runner.model, step_name)
        if not torch.cuda.is_available():
            self._keep_detection_ops_fp32(runner.model)

    def _exit(self) -> None:
        while self._undo:
            self._undo.pop()()

    def _wrap_step(self, model, step_name: str) -> None:
        """Casts what ``model.<step_name>`` returns to fp32 (the instance
        attribute, so a wrapper such as DDP keeps its own step)."""
        own = model.__dict__.get(step_name)
        step = getattr(model, step_name)

        def step_fp32(data):
            return to_fp32(step(data))

        setattr(model, step_name, step_fp32)

        def undo():
            if own is None:
                delattr(model, step_name)
            else:
                setattr(model, step_name, own)

        self._undo.append(undo)

    def _keep_detection_ops_fp32(self, model) -> int:
        """Hooks the RoI extractors and heads of an mmdet model; returns
        how many modules were hooked."""
        if 'mmdet' not in sys.modules:  # then no mmdet module is in model
            return 0
        from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
        from mmdet.models.roi_heads.bbox_heads import BBoxHead
        from mmdet.models.roi_heads.mask_heads import FCNMaskHead
        from mmdet.models.roi_heads.roi_extractors import BaseRoIExtractor

        handles = []
        for module in model.modules():
            if isinstance(module, BaseRoIExtractor):
                handles.append(
                    module.register_forward_pre_hook(
                        lambda _, args: to_fp32(args)
                    )
                )
            elif isinstance(module, (BaseDenseHead, BBoxHead, FCNMaskHead)):
                handles.append(
                    module.register_forward_hook(
                        lambda _, args, output: to_fp32(output)
                    )
                )
        self._undo.extend(handle.remove for handle in handles)
        if handles:
            print_log(
                f'bf16 CPU autocast: {len(handles)} RoI extractors and '
                'heads hand fp32 tensors to RoIAlign and post-processing '
                '(NMS), whose mmcv CPU kernels take no bf16',
                logger='current',
            )
        return len(handles)
