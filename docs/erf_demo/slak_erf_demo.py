# A small, randomly initialised SLaK for the ERF demo in
# docs/release_and_analysis.md (CPU, about a second per image at 256x256).
# Layer scale 1.0 so that the blocks contribute from the start.
custom_imports = dict(imports=['slak_mm'])
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='SLaK',
        arch=dict(depths=[2, 2, 4, 2], channels=[32, 64, 128, 256]),
        width_factor=1.0,
        kernel_sizes=[31, 29, 27, 13],
        small_kernel=5,
        layer_scale_init_value=1.0,
        out_indices=3,
        gap_before_final_norm=True,
    ),
    neck=None,
    head=dict(type='LinearClsHead', num_classes=10, in_channels=256),
)
