# The context demo, model (c): the SLaK of
# demo_context_fpn_slak_ade20k_synthetic.py with its large kernels (the
# K x 5 and 5 x K strips of every stage) frozen at their random initial
# values. Everything else trains as in (a): the 5x5 kernels, the batch
# norms after the strips, the MLPs and the decoder, with the same dynamic
# sparse training on all other weights. The frozen strips stay dense (a
# mask would zero weights that can never grow back), so (c) keeps more
# non-zero weights than (a).
_base_ = ['./demo_context_fpn_slak_ade20k_synthetic.py']

large_kernels = ['large_kernel.vertical.conv', 'large_kernel.horizontal.conv']
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            key: dict(lr_mult=0.0, decay_mult=0.0) for key in large_kernels
        }
    )
)
custom_hooks = [
    dict(
        _base_.custom_hooks[0],
        exclude=[f'*{key}.weight' for key in large_kernels],
    )
]
