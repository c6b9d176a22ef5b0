"""Custom operators: kernels that stock PyTorch does not provide.

:mod:`.triton_dwconv`: SLaK's "same"-padded depthwise convolution as Triton
kernels (forward, input and weight gradients), for CUDA. Importing it never
needs Triton; ``triton_dwconv.available()`` says whether it can run.

:mod:`.same_padding`: the cropping rule every backend and kernel shares
(:func:`~.same_padding.reachable_kernel`).
"""
