# UperNet + FCN auxiliary head with a SLaK backbone on ADE20K, 512x512 crops,
# 160k iterations. Batch 16 = 8 GPUs x 2 images; `--auto-scale-lr` in
# tools/train.py rescales the lr for other totals.
_base_ = [
    'mmseg::_base_/models/upernet_convnext.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
    '../../_base_/slak_t_downstream.py',
    '../../_base_/exact_resume.py',
]
custom_imports = dict(imports=['slak_mm'], allow_failed_imports=False)
default_hooks = dict(_base_.exact_resume_hooks)

crop_size = (512, 512)
# SyncBN for multi-GPU runs (the Runner reverts it to BN on one process);
# `--cfg-options norm_cfg.type=BN` does not reach the dicts below, so select
# plain BN per module, e.g. model.backbone.norm_cfg.type=BN.
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(_base_.slak_t_backbone, _delete_=True, norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=[124, 249, 499, 998], num_classes=150, norm_cfg=norm_cfg
    ),
    auxiliary_head=dict(in_channels=499, num_classes=150, norm_cfg=norm_cfg),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)),
)

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05
    ),
    constructor='SLaKLearningRateDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise', num_layers=6),
)

param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500
    ),
    dict(
        type='PolyLR',
        power=1.0,
        begin=1500,
        end=160000,
        eta_min=0.0,
        by_epoch=False,
    ),
]

train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=16)

# Keep the zero pattern of the sparse ImageNet checkpoint while fine-tuning.
custom_hooks = [dict(type='StaticSparsityHook')]
