"""``'triton'``: the depthwise convs on the Triton kernels, for CUDA.

- Every depthwise conv (the conv+BN branches in training, a single fused
  kernel) runs on
  :func:`~slak_mm.ops.triton_dwconv.depthwise_conv_same_triton`: forward,
  input gradient and weight gradient as Triton kernels, kernels cropped to
  the window that can reach the map, fp32 accumulation for fp32, bf16 and
  fp16 maps (under autocast the input is cast as for ``F.conv2d``).
- The two folded strips of an eval-mode (or deploy) large-kernel module
  and their biases run in one kernel pass
  (:func:`~slak_mm.ops.triton_dwconv.depthwise_conv_pair_same_triton`; two
  differentiable convs when a gradient is needed, e.g. BNs frozen by
  ``norm_eval``).
- Maps stay channels-last (the kernels' layout); block MLPs, norms and
  everything else are the standard PyTorch ops of ``'native'``. While
  tracing, exporting or compiling, the standard ops run as in ``'native'``.

``'auto'`` picks it on CUDA when Triton imports (it ships with the CUDA
builds of PyTorch); ``'native'`` (cuDNN) otherwise. On CPU tensors it runs
only when named explicitly and ``TRITON_INTERPRET=1`` is set (Triton's
interpreter, for tests); ``'auto'`` never picks it there.
"""

from slak_mm.ops import triton_dwconv

from .base import is_tracing, register_backend
from .native import NativeBackend


@register_backend
class TritonBackend(NativeBackend):
    name = 'triton'
    device_types = ('cuda',)
    auto_priority = 10

    @classmethod
    def available(cls) -> bool:
        return triton_dwconv.available('cuda')

    def runs_on_request(self, device_type: str) -> bool:
        # Triton's interpreter runs the same kernels on CPU tensors.
        return device_type == 'cpu' and triton_dwconv.available('cpu')

    def channels_last(self, device):
        return True  # the Triton kernels' layout

    def conv_same(self, x, weight, bias):
        if is_tracing():
            return super().conv_same(x, weight, bias)
        return triton_dwconv.depthwise_conv_same_triton(x, weight, bias)

    def depthwise_conv_sum(self, x, kernels):
        if len(kernels) != 2 or is_tracing():
            return super().depthwise_conv_sum(x, kernels)
        (weight1, bias1), (weight2, bias2) = kernels
        biases = [b for b in (bias1, bias2) if b is not None]
        bias = sum(biases[1:], biases[0]) if biases else None
        return triton_dwconv.depthwise_conv_pair_same_triton(
            x, weight1, weight2, bias
        )
