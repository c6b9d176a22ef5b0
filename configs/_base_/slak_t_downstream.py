# SLaK-T as fine-tuned downstream in the release (detection, segmentation):
# kernels 51/49/47/13 with 5x5 small kernels, widths x1.3, all four stages
# out, drop path 0.4, layer scale 1.0. Configs take it as
# `dict(_base_.slak_t_backbone, _delete_=True, norm_cfg=..., ...)`.
slak_t_backbone = dict(
    type='SLaK',
    arch='tiny',
    kernel_sizes=(51, 49, 47, 13),
    small_kernel=5,
    width_factor=1.3,
    out_indices=(0, 1, 2, 3),
    drop_path_rate=0.4,
    layer_scale_init_value=1.0,
)
