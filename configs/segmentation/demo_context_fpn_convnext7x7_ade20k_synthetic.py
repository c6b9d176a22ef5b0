# The context demo, model (b): the network of
# demo_context_fpn_slak_ade20k_synthetic.py with 7x7 kernels instead of
# 51/49/47/13 (a ConvNeXt-style backbone of equal depth and width: one 7x7
# depthwise kernel plus a parallel 5x5 one, which folds into the 7x7), same
# data, decoder, schedule and dynamic sparse training.
_base_ = ['./demo_context_fpn_slak_ade20k_synthetic.py']

model = dict(backbone=dict(kernel_sizes=(7, 7, 7, 7), decompose=False))
