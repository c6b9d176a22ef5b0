# UperNet with SLaK-T on ADE20K, 512x512, 160k iterations, 8 GPUs x 2
# images (paper: 47.6 mIoU). Fine-tuning keeps the ImageNet checkpoint's
# zero pattern (static sparse masks).
_base_ = ['./_base_/upernet_slak_ade20k.py']

# An ImageNet-1k SLaK-T checkpoint: a released one as downloaded, or
# one converted by tools/model_converters/convert_release_checkpoint.py.
# Override with --cfg-options model.backbone.init_cfg.checkpoint=PATH
checkpoint_file = 'checkpoints/slak_tiny_in1k.pth'
model = dict(
    backbone=dict(
        arch='tiny',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file),
    ),
    decode_head=dict(in_channels=[124, 249, 499, 998]),
    auxiliary_head=dict(in_channels=499),
)
