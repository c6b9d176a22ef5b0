"""Parameters and MACs of a config's model: the logic of
``tools/analysis_tools/get_flops.py``.

The model is built from the config (weights from a checkpoint or none),
masks come from the checkpoint's zeros, a mask file or a uniform draw, and
:func:`~slak_mm.analysis.complexity.count_complexity` counts one image.
For mmdet detectors the backbone and neck are counted (``extract_feat``),
then the whole detector in ``mode='tensor'`` with generated image metadata.
"""

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn

from ..models.builder import (
    build_model_from_config,
    is_mmdet_detector,
)
from ..utils.checkpoint import load_checkpoint_strict, safe_torch_load
from .complexity import (
    ComplexityReport,
    count_complexity,
    masks_from_model,
    uniform_masks,
)


@dataclass
class FlopsResult:
    """What :func:`config_complexity` counted.

    Attributes:
        report (ComplexityReport): The model (a detector: backbone + neck).
        masks (str): Where the masks came from (``'dense'`` without).
        input_shape (tuple[int]): ``(C, H, W)`` of the one image.
        whole_detector (ComplexityReport, optional): A detector in
            ``mode='tensor'``.
        rpn_proposals (int, optional): RPN proposals on the (all-zero)
            input of the whole-detector count; its RoI-head MACs scale
            with them.
    """

    report: ComplexityReport
    masks: str
    input_shape: Sequence[int]
    whole_detector: Optional[ComplexityReport] = None
    rpn_proposals: Optional[int] = None

    def to_dict(self) -> dict:
        result = dict(self.report.to_dict(), masks=self.masks)
        if self.whole_detector is not None:
            result['whole_detector'] = dict(
                self.whole_detector.to_dict(),
                rpn_proposals=self.rpn_proposals,
            )
        return result


def load_masks(
    filename: str, key: Optional[str] = None
) -> Dict[str, torch.Tensor]:
    """Reads ``{parameter name: tensor}`` masks (non-zero = kept).

    Args:
        filename (str): A ``.pth`` file.
        key (str, optional): The entry holding the masks in a nested file.

    Raises:
        KeyError: If ``key`` is not in the file.
        TypeError: If what is read is not a dict of tensors.
    """
    loaded = safe_torch_load(filename)
    if key is not None:
        if key not in loaded:
            raise KeyError(
                f'{filename}: no {key!r} entry; it has {sorted(loaded)[:10]}'
            )
        loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise TypeError(
            f'{filename}: expected {{parameter name: tensor}}'
            + ('' if key else '; pass --masks-key for a nested entry')
        )
    return {name: mask != 0 for name, mask in loaded.items()}


def config_complexity(
    config: str,
    shape: Sequence[int] = (224, 224),
    checkpoint: Optional[str] = None,
    masks_file: Optional[str] = None,
    masks_key: Optional[str] = None,
    uniform_sparsity: Optional[float] = None,
    cfg_options: Optional[dict] = None,
) -> FlopsResult:
    """Counts the model of ``config`` on one ``(H, W)`` image.

    Args:
        config (str): An OpenMMLab 2.x config.
        shape (Sequence[int]): ``(H, W)``; the channels are the backbone's
            ``in_channels`` (3 by default).
        checkpoint (str, optional): Weights to load; the masks are then
            ``weight != 0``.
        masks_file (str, optional): A file of masks (see :func:`load_masks`).
        masks_key (str, optional): Its entry holding the masks.
        uniform_sparsity (float, optional): Random masks at this sparsity
            on every 2-D/4-D weight.
        cfg_options (dict, optional): Config overrides.

    Only one of ``checkpoint``, ``masks_file`` and ``uniform_sparsity`` may
    be given; with none the count is dense.
    """
    given = [x is not None for x in (checkpoint, masks_file, uniform_sparsity)]
    if sum(given) > 1:
        raise ValueError(
            'give at most one of checkpoint, masks_file and uniform_sparsity'
        )
    model, cfg = build_model_from_config(config, cfg_options)
    in_channels = cfg.model.get('backbone', {}).get('in_channels', 3)
    masks, source = None, 'dense'
    if checkpoint is not None:
        load_checkpoint_strict(model, checkpoint)
        masks, source = masks_from_model(model), checkpoint
    elif masks_file is not None:
        masks, source = load_masks(masks_file, masks_key), masks_file
    elif uniform_sparsity is not None:
        masks = uniform_masks(model, uniform_sparsity)
        source = f'uniform sparsity {uniform_sparsity}'
    input_shape = (in_channels, *shape)
    if not is_mmdet_detector(model):
        report = count_complexity(model, input_shape, masks=masks)
        return FlopsResult(report, source, input_shape)
    report = count_complexity(
        model, input_shape, masks=masks, forward_fn=_extract_feat
    )
    full, proposals = count_detector(model, input_shape, masks)
    return FlopsResult(report, source, input_shape, full, proposals)


def _extract_feat(model: nn.Module, inputs: torch.Tensor):
    return model.extract_feat(inputs)


def count_detector(
    model: nn.Module,
    input_shape: Sequence[int],
    masks: Optional[Dict[str, torch.Tensor]],
):
    """Counts a whole mmdet detector in ``mode='tensor'``.

    Two-stage detectors need image metadata there; one generated data
    sample per image supplies it (image, pad and batch shape = the input,
    scale factor 1).

    Returns:
        tuple: The report and the number of RPN proposals per image
        (None without an RPN).
    """
    from mmdet.structures import DetDataSample

    height, width = input_shape[1:]
    sample = DetDataSample(
        metainfo=dict(
            img_shape=(height, width),
            ori_shape=(height, width),
            pad_shape=(height, width),
            batch_input_shape=(height, width),
            scale_factor=(1.0, 1.0),
        )
    )
    proposals = []
    rpn_head = getattr(model, 'rpn_head', None)
    if rpn_head is not None:
        rpn_predict = rpn_head.predict

        def predict_and_count(*args, **kwargs):
            results = rpn_predict(*args, **kwargs)
            proposals.append(len(results[0]))
            return results

        rpn_head.predict = predict_and_count
    try:
        report = count_complexity(
            model,
            input_shape,
            masks=masks,
            forward_fn=lambda m, x: m(x, [sample], mode='tensor'),
        )
    finally:
        if rpn_head is not None:
            del rpn_head.predict
    return report, proposals[-1] if proposals else None


def format_totals(report: ComplexityReport) -> str:
    """The table of ``report`` and its dense and sparse totals."""
    total = report.to_dict()['total']
    return (
        f'{report.table()}\n'
        f'Params: {total["params"] / 1e6:.2f}M dense, '
        f'{total["params_nonzero"] / 1e6:.2f}M non-zero\n'
        f'MACs: {total["macs"] / 1e9:.2f}G dense, '
        f'{total["macs_sparse"] / 1e9:.2f}G sparse'
    )


def format_result(result: FlopsResult) -> str:
    """What ``get_flops`` prints: the tables with their totals and notes."""
    channels, height, width = result.input_shape
    lines = [f'Input: 1x{channels}x{height}x{width}; masks: {result.masks}']
    if result.whole_detector is None:
        lines.append(format_totals(result.report))
        if 'auxiliary_head' in result.report.not_run:
            lines.append(
                'The auxiliary head only adds a training loss; inference '
                'does not run it.'
            )
        return '\n'.join(lines)
    lines += ['Backbone + neck (extract_feat):', format_totals(result.report)]
    proposals = result.rpn_proposals
    counted = (
        ''
        if proposals is None
        else (f', {proposals} RPN proposals on this input')
    )
    lines += [
        f"\nWhole detector (mode='tensor'{counted}):",
        format_totals(result.whole_detector),
    ]
    if proposals is not None:
        lines.append(
            "In mode='tensor' the RoI heads (mask heads included) run on "
            'every proposal,\nso their MACs scale with the proposal '
            'count; inference runs the mask heads\nonly on the '
            'detections kept after NMS.'
        )
    return '\n'.join(lines)
