"""Layer-wise / stage-wise learning-rate decay for SLaK backbones."""

from typing import List

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS


def get_slak_layer_id(
    param_name: str, num_layers: int, stage2_depth: int
) -> int:
    """Layer id of a parameter for ``layer_wise`` decay.

    ConvNeXt's rule on SLaK's module names: the stem is layer 0, stage 0 is
    layer 1, stage 1 (with its downsampling) layer 2, the blocks of stage 2
    are split evenly over layers ``3 .. num_layers - 1`` (its downsampling is
    layer 3), and stage 3 (with its downsampling) is layer ``num_layers``.
    Everything outside the backbone is layer ``num_layers + 1``. With
    ``num_layers=6`` and 9 blocks in stage 2 (SLaK-T) this equals mmdet's and
    mmseg's ConvNeXt rule; with 27 blocks the split stays within the layers.

    Args:
        param_name (str): Parameter name in the whole model, e.g.
            ``backbone.stages.2.4.pointwise_conv1.weight``.
        num_layers (int): Number of backbone layers (``paramwise_cfg``).
        stage2_depth (int): Number of blocks of stage 2.
    """
    if param_name.startswith('backbone.downsample_layers'):
        stage_id = int(param_name.split('.')[2])
        return {0: 0, 1: 2, 2: 3}.get(stage_id, num_layers)
    if param_name.startswith('backbone.stages'):
        stage_id = int(param_name.split('.')[2])
        block_id = int(param_name.split('.')[3])
        if stage_id in (0, 1):
            return stage_id + 1
        if stage_id == 2:
            return 3 + block_id * (num_layers - 3) // stage2_depth
        return num_layers
    return num_layers + 1


def get_slak_stage_id(param_name: str, num_layers: int) -> int:
    """Stage id of a parameter for ``stage_wise`` decay.

    As mmseg's ConvNeXt rule (used by the released ADE20K recipe): every
    downsampling layer is 0, stage i is ``i + 1``, everything else
    ``num_layers + 1``.
    """
    if param_name.startswith('backbone.downsample_layers'):
        return 0
    if param_name.startswith('backbone.stages'):
        return int(param_name.split('.')[2]) + 1
    return num_layers + 1


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class SLaKLearningRateDecayOptimizerConstructor(
    DefaultOptimWrapperConstructor
):
    """Learning-rate decay over the layers of a SLaK backbone.

    Parameter ``p`` of layer id ``l`` gets ``lr = base_lr * decay_rate **
    (num_layers + 1 - l)``, so heads and necks train at ``base_lr`` and the
    stem at ``decay_rate ** (num_layers + 1)`` of it. One-dimensional
    parameters (norms, biases, layer scales) get no weight decay.

    ``paramwise_cfg`` keys:
        - ``num_layers`` (int): Number of backbone layers, e.g. 6.
        - ``decay_rate`` (float): e.g. 0.9 (stage-wise) or 0.7 (layer-wise).
        - ``decay_type`` (str): ``'layer_wise'`` or ``'stage_wise'``.

    The model must have a ``backbone`` attribute holding a SLaK-shaped
    backbone (``downsample_layers`` and ``stages``).
    """

    def add_params(
        self, params: List[dict], module: nn.Module, **kwargs
    ) -> None:
        cfg = self.paramwise_cfg
        missing = {'num_layers', 'decay_rate'} - set(cfg)
        if missing:
            raise KeyError(
                f'paramwise_cfg of {type(self).__name__} lacks '
                f'{sorted(missing)}'
            )
        num_layers = int(cfg['num_layers'])
        decay_rate = float(cfg['decay_rate'])
        decay_type = cfg.get('decay_type', 'layer_wise')
        if decay_type not in ('layer_wise', 'stage_wise'):
            raise ValueError(
                "paramwise_cfg decay_type must be 'layer_wise' "
                f"or 'stage_wise', got {decay_type!r}"
            )
        backbone = getattr(module, 'backbone', None)
        if backbone is None or not hasattr(backbone, 'stages'):
            raise TypeError(
                f'{type(self).__name__} needs a model with a SLaK-shaped '
                f'"backbone" (stages, downsample_layers); got '
                f'{type(module).__name__}'
            )
        if decay_type == 'layer_wise' and num_layers < 4:
            raise ValueError(
                f'layer_wise decay needs num_layers >= 4, got {num_layers}'
            )
        stage2_depth = len(backbone.stages[2])

        groups = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            if param.ndim == 1 or name.endswith('.bias'):
                decay_name, weight_decay = 'no_decay', 0.0
            else:
                decay_name, weight_decay = 'decay', self.base_wd
            if decay_type == 'layer_wise':
                layer_id = get_slak_layer_id(name, num_layers, stage2_depth)
            else:
                layer_id = get_slak_stage_id(name, num_layers)
            group_name = f'layer_{layer_id}_{decay_name}'
            if group_name not in groups:
                lr_scale = decay_rate ** (num_layers + 1 - layer_id)
                groups[group_name] = dict(
                    params=[],
                    param_names=[],
                    weight_decay=weight_decay,
                    lr=self.base_lr * lr_scale,
                    lr_scale=lr_scale,
                    group_name=group_name,
                )
            groups[group_name]['params'].append(param)
            groups[group_name]['param_names'].append(name)
        summary = ', '.join(
            f'{k}: lr x{v["lr_scale"]:.4g} ({len(v["params"])} tensors)'
            for k, v in sorted(groups.items())
        )
        print_log(
            f'{decay_type} lr decay {decay_rate} over {num_layers} '
            f'layers: {summary}',
            logger='current',
        )
        params.extend(groups.values())
