"""Layer-wise / stage-wise learning-rate decay for SLaK backbones.

The rule that maps a parameter to its layer is the backbone's own
(:meth:`SLaK.get_layer_depth <slak_mm.models.SLaK.get_layer_depth>`, as on
mmpretrain's ConvNeXt), so mmpretrain's
``LearningRateDecayOptimWrapperConstructor`` works on an ``ImageClassifier``
with a SLaK backbone too. The constructor here adds what the released
downstream recipes need: a configurable ``num_layers`` and mmseg's
stage-wise rule, for any model whose ``backbone`` is a SLaK (mmseg, mmdet).
"""

from typing import List, Tuple

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

from ..models.slak import SLaK
from .optim_wrapper import use_plain_param_groups


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
        - ``decay_type`` (str): ``'layer_wise'`` (ConvNeXt's rule,
          :meth:`SLaK.get_layer_depth`) or ``'stage_wise'`` (mmseg's
          ConvNeXt stage rule, :meth:`SLaK.get_stage_depth`).

    The model must have a ``backbone`` attribute holding a :class:`SLaK`.
    """

    def _decay_settings(self) -> Tuple[int, float, str]:
        """``num_layers``, ``decay_rate`` and ``decay_type``, checked."""
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
        return num_layers, decay_rate, decay_type

    def add_params(
        self, params: List[dict], module: nn.Module, **kwargs
    ) -> None:
        """Adds one group per (layer id, decay or not) to ``params``."""
        num_layers, decay_rate, decay_type = self._decay_settings()
        backbone = getattr(module, 'backbone', None)
        if not isinstance(backbone, SLaK):
            raise TypeError(
                f'{type(self).__name__} needs a model whose "backbone" is a '
                f'SLaK; got {type(module).__name__} with backbone '
                f'{type(backbone).__name__}'
            )
        depth_of = (
            backbone.get_layer_depth
            if decay_type == 'layer_wise'
            else backbone.get_stage_depth
        )
        groups = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            if param.ndim == 1 or name.endswith('.bias'):
                decay_name, weight_decay = 'no_decay', 0.0
            else:
                decay_name, weight_decay = 'decay', self.base_wd
            layer_id, num_ids = depth_of(name, 'backbone.', num_layers)
            group_name = f'layer_{layer_id}_{decay_name}'
            if group_name not in groups:
                lr_scale = decay_rate ** (num_ids - 1 - layer_id)
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

    def __call__(self, model: nn.Module) -> OptimWrapper:
        optim_wrapper = super().__call__(model)
        # For torch.compile (see use_plain_param_groups).
        use_plain_param_groups(optim_wrapper.optimizer)
        return optim_wrapper
