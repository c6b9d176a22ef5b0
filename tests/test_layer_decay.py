import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch.nn as nn
from mmengine.optim import build_optim_wrapper

from slak_mm.models import SLaK

from .helpers import TINY_ARCH


class Segmentor(nn.Module):
    def __init__(self, stage2_depth=2):
        super().__init__()
        arch = dict(TINY_ARCH, depths=[1, 1, stage2_depth, 1])
        self.backbone = SLaK(
            arch=arch,
            kernel_sizes=(7, 7, 5, 3),
            small_kernel=3,
            out_indices=(0, 1, 2, 3),
        )
        self.decode_head = nn.Conv2d(41, 3, 1)


def build(model, decay_type, decay_rate, num_layers=6):
    return build_optim_wrapper(
        model,
        dict(
            type='OptimWrapper',
            optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.05),
            constructor='SLaKLearningRateDecayOptimizerConstructor',
            paramwise_cfg=dict(
                decay_rate=decay_rate,
                decay_type=decay_type,
                num_layers=num_layers,
            ),
        ),
    )


def lr_and_wd(optim_wrapper, model):
    ids = {id(p): n for n, p in model.named_parameters()}
    found = {}
    for group in optim_wrapper.optimizer.param_groups:
        for p in group['params']:
            found[ids[id(p)]] = (group['lr'], group['weight_decay'])
    return found


def test_stage_wise_multipliers():
    model = Segmentor()
    groups = lr_and_wd(build(model, 'stage_wise', 0.9), model)
    r = 0.9
    expected = {
        'backbone.downsample_layers.0.0.weight': (r**7, 0.05),
        'backbone.downsample_layers.2.1.weight': (r**7, 0.05),
        'backbone.stages.0.0.pointwise_conv1.weight': (r**6, 0.05),
        'backbone.stages.1.0.large_kernel.vertical.conv.weight': (r**5, 0.05),
        'backbone.stages.2.1.pointwise_conv2.weight': (r**4, 0.05),
        'backbone.stages.3.0.pointwise_conv1.weight': (r**3, 0.05),
        'backbone.stages.3.0.gamma': (r**3, 0.0),
        'backbone.stages.3.0.large_kernel.small.bn.weight': (r**3, 0.0),
        'backbone.stages.0.0.pointwise_conv1.bias': (r**6, 0.0),
        'backbone.norm2.weight': (1.0, 0.0),
        'decode_head.weight': (1.0, 0.05),
        'decode_head.bias': (1.0, 0.0),
    }
    for name, (lr, wd) in expected.items():
        assert groups[name][0] == pytest.approx(lr), name
        assert groups[name][1] == wd, name


def test_layer_wise_multipliers_tiny_depth_matches_convnext_rule():
    model = Segmentor(stage2_depth=9)
    groups = lr_and_wd(build(model, 'layer_wise', 0.7), model)
    r = 0.7
    expected = {
        'backbone.downsample_layers.0.0.weight': r**7,  # layer 0
        'backbone.stages.0.0.pointwise_conv1.weight': r**6,  # layer 1
        'backbone.downsample_layers.1.1.weight': r**5,  # layer 2
        'backbone.stages.1.0.pointwise_conv1.weight': r**5,
        'backbone.downsample_layers.2.1.weight': r**4,  # layer 3
        'backbone.stages.2.0.pointwise_conv1.weight': r**4,  # 3 + 0 // 3
        'backbone.stages.2.4.pointwise_conv1.weight': r**3,  # 3 + 4 // 3
        'backbone.stages.2.8.pointwise_conv1.weight': r**2,  # 3 + 8 // 3
        'backbone.downsample_layers.3.1.weight': r**1,  # layer 6
        'backbone.stages.3.0.pointwise_conv1.weight': r**1,
        'decode_head.weight': 1.0,  # layer 7
    }
    for name, lr in expected.items():
        assert groups[name][0] == pytest.approx(lr), name


def test_layer_wise_deep_stage2_stays_within_layers():
    model = Segmentor(stage2_depth=27)
    groups = lr_and_wd(build(model, 'layer_wise', 0.7), model)
    stage2 = [
        groups[f'backbone.stages.2.{b}.pointwise_conv1.weight'][0]
        for b in range(27)
    ]
    assert max(stage2) == pytest.approx(0.7**2)
    assert min(stage2) == pytest.approx(0.7**4)
    assert stage2 == sorted(stage2)


def test_frozen_parameters_are_skipped():
    model = Segmentor()
    model.backbone.stages[0].requires_grad_(False)
    groups = lr_and_wd(build(model, 'stage_wise', 0.9), model)
    assert not any(name.startswith('backbone.stages.0.') for name in groups)


def test_bad_paramwise_cfg_raises():
    with pytest.raises(ValueError, match='decay_type'):
        build(Segmentor(), 'block_wise', 0.9)
    with pytest.raises(TypeError, match='backbone'):
        build(nn.Linear(2, 2), 'stage_wise', 0.9)


# (lr, weight_decay) of every parameter, recorded from the constructor as
# it was before the layer rule moved onto SLaK.get_layer_depth (base lr 1.0,
# so lr is the scale; base weight decay 0.05).
BASELINE = Path(__file__).parent / 'baselines' / 'layer_decay_lr_wd.json'


@pytest.mark.parametrize(
    'case', sorted(json.loads(BASELINE.read_text())), ids=str
)
def test_every_parameter_matches_the_recorded_baseline(case):
    recorded = json.loads(BASELINE.read_text())[case]
    cfg = recorded['config']
    model = Segmentor(stage2_depth=cfg['stage2_depth'])
    if cfg['frozen']:
        model.backbone.stages[: cfg['frozen']].requires_grad_(False)
    groups = lr_and_wd(
        build(model, cfg['decay_type'], cfg['decay_rate'], cfg['num_layers']),
        model,
    )
    assert sorted(groups) == sorted(recorded['params'])
    for name, (lr, weight_decay) in recorded['params'].items():
        assert groups[name][0] == pytest.approx(lr, rel=1e-12), name
        assert groups[name][1] == weight_decay, name


@pytest.mark.parametrize('stage2_depth', [9, 27])
def test_get_layer_depth_equals_mmpretrain_convnext_rule(stage2_depth):
    from mmpretrain.models.backbones import ConvNeXt

    backbone = Segmentor(stage2_depth=stage2_depth).backbone
    # ConvNeXt's rule reads only ``depths``; ConvNeXt and SLaK share the
    # downsample_layers.<i> / stages.<i>.<j> names.
    convnext = SimpleNamespace(depths=backbone.depths)
    names = [f'backbone.{n}' for n, _ in backbone.named_parameters()]
    names += ['head.fc.weight', 'neck.bias']
    for name in names:
        expected = ConvNeXt.get_layer_depth(convnext, name, 'backbone.')
        assert backbone.get_layer_depth(name, 'backbone.') == expected, name


def test_get_layer_depth_rejects_too_few_layers_and_stages():
    backbone = Segmentor().backbone
    with pytest.raises(ValueError, match='num_layers >= 4'):
        backbone.get_layer_depth('stages.0.0.gamma', num_layers=3)
    two_stages = SLaK(
        arch=dict(depths=[1, 1], channels=[8, 16]),
        kernel_sizes=(5, 3),
        small_kernel=3,
    )
    with pytest.raises(ValueError, match='2 stages'):
        two_stages.get_layer_depth('stages.0.0.gamma')


def _classifier_and_mmpretrain_optim_wrapper(models):
    model = models.build(
        dict(
            type='ImageClassifier',
            backbone=dict(
                type='SLaK',
                arch=dict(TINY_ARCH, depths=[1, 1, 9, 1]),
                kernel_sizes=(7, 7, 5, 3),
                small_kernel=3,
                out_indices=3,
                gap_before_final_norm=True,
            ),
            head=dict(type='LinearClsHead', num_classes=3, in_channels=41),
        )
    )
    optim_wrapper = build_optim_wrapper(
        model,
        dict(
            type='OptimWrapper',
            optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.05),
            constructor='LearningRateDecayOptimWrapperConstructor',
            paramwise_cfg=dict(layer_decay_rate=0.7, flat_decay_mult=0.0),
        ),
    )
    return model, optim_wrapper


def test_mmpretrain_constructor_on_image_classifier_with_slak():
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model, optim_wrapper = _classifier_and_mmpretrain_optim_wrapper(MODELS)
    groups = lr_and_wd(optim_wrapper, model)

    r = 0.7  # depth 9 in stage 2: ConvNeXt's 6 layers, ids 0..7
    expected = {
        'backbone.downsample_layers.0.0.weight': (r**7, 0.05),
        'backbone.stages.0.0.pointwise_conv1.weight': (r**6, 0.05),
        'backbone.downsample_layers.1.1.weight': (r**5, 0.05),
        'backbone.stages.2.0.large_kernel.vertical.conv.weight': (r**4, 0.05),
        'backbone.stages.2.4.pointwise_conv2.weight': (r**3, 0.05),
        'backbone.stages.2.8.gamma': (r**2, 0.0),
        'backbone.stages.3.0.pointwise_conv1.bias': (r**1, 0.0),
        'backbone.norm3.weight': (1.0, 0.0),
        'head.fc.weight': (1.0, 0.05),
        'head.fc.bias': (1.0, 0.0),
    }
    for name, (lr, wd) in expected.items():
        assert groups[name][0] == pytest.approx(lr), name
        assert groups[name][1] == wd, name
    # Every parameter as our constructor gives it with num_layers=6.
    ours = lr_and_wd(build(model, 'layer_wise', 0.7, num_layers=6), model)
    assert groups.keys() == ours.keys()
    for name, (lr, wd) in ours.items():
        assert groups[name] == (pytest.approx(lr), wd), name
