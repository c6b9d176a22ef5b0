import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.registry import DefaultScope

import slak_mm  # noqa: F401  registers SLaK in the toolkits' registries

from .helpers import TINY_ARCH, tiny_classifier_cfg

SMALL_BACKBONE = dict(
    type='SLaK', arch=TINY_ARCH, kernel_sizes=[13, 11, 9, 7], small_kernel=3
)


def run_python(code):
    result = subprocess.run(
        [sys.executable, '-c', textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_import_does_not_import_toolkits():
    out = run_python("""
        import sys
        import slak_mm
        from mmengine.registry import MODELS
        assert MODELS.get('SLaK') is slak_mm.SLaK
        print(sorted(m for m in ('mmdet', 'mmseg', 'mmpretrain')
                     if m in sys.modules))
    """)
    assert out.strip() == '[]'


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_custom_imports_builds_slak_in_each_scope(tmp_path, scope):
    config = tmp_path / f'{scope}_cfg.py'
    config.write_text(
        textwrap.dedent(f"""
        default_scope = '{scope}'
        custom_imports = dict(imports=['slak_mm'], allow_failed_imports=False)
        model = {SMALL_BACKBONE!r}
        """)
    )
    out = run_python(f"""
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        from {scope}.registry import MODELS
        cfg = Config.fromfile({str(config)!r})
        init_default_scope(cfg.default_scope)
        model = MODELS.build(cfg.model)
        print(type(model).__module__, type(model).__name__)
    """)
    assert out.split() == ['slak_mm.models.slak', 'SLaK']


def test_mmpretrain_image_classifier_with_slak_learns():
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    from mmpretrain.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(tiny_classifier_cfg())
    # Gradients reach every weight through the classifier: a few AdamW
    # steps on one fixed batch fit it.
    inputs = torch.randn(2, 3, 64, 64)
    samples = [DataSample().set_gt_label(i) for i in (1, 3)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = model(inputs, samples, mode='loss')['loss']
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.5 * losses[0], losses


def test_mmseg_upernet_with_slak():
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(
            dict(
                type='EncoderDecoder',
                backbone=dict(SMALL_BACKBONE, out_indices=(0, 1, 2, 3)),
                decode_head=dict(
                    type='UPerHead',
                    in_channels=[10, 20, 31, 41],
                    in_index=[0, 1, 2, 3],
                    channels=16,
                    num_classes=7,
                    norm_cfg=dict(type='BN'),
                    align_corners=False,
                    loss_decode=dict(type='CrossEntropyLoss'),
                ),
            )
        )
    # TINY_ARCH widths at the default width_factor 1.3.
    assert model.backbone.channels == [10, 20, 31, 41]
    logits = model(torch.randn(2, 3, 64, 64), mode='tensor')
    assert logits.shape == (2, 7, 16, 16)


def test_mmdet_detector_with_slak():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(
            dict(
                type='RetinaNet',
                backbone=dict(SMALL_BACKBONE, out_indices=(1, 2, 3)),
                neck=dict(
                    type='FPN',
                    in_channels=[20, 31, 41],
                    out_channels=16,
                    num_outs=3,
                ),
                bbox_head=dict(
                    type='RetinaHead',
                    num_classes=3,
                    in_channels=16,
                    feat_channels=16,
                    anchor_generator=dict(
                        type='AnchorGenerator',
                        octave_base_scale=4,
                        scales_per_octave=1,
                        ratios=[1.0],
                        strides=[8, 16, 32],
                    ),
                    bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
                    loss_cls=dict(type='FocalLoss', use_sigmoid=True),
                    loss_bbox=dict(type='L1Loss'),
                ),
            )
        )
    cls_scores, _ = model(torch.randn(1, 3, 64, 64), mode='tensor')
    assert [tuple(s.shape[2:]) for s in cls_scores] == [(8, 8), (4, 4), (2, 2)]
