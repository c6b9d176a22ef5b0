"""The Triton kernels' part of the GPU check (``tools/misc/gpu_check.sh``).

Run as ``python -m slak_mm.analysis.triton_check [--out FILE]`` on a CUDA
machine (it prints what it measures and writes it as JSON):

- the first and the second weight-gradient call of a shape new to the
  process (the first one autotunes: Triton times every candidate tile on
  the call's own buffers, then runs the winner) against
  ``torch.nn.grad.conv2d_weight`` in fp32 on the same values, with each
  call's wall time;
- the forward, input-gradient and weight-gradient kernels of each SLaK-T
  stage's large strip (``K x 5``) against cuDNN on channels-last tensors
  (``F.conv2d`` and ``aten.convolution_backward``), medians of CUDA-event
  timings after warm-up;
- the peak ``max_memory_allocated`` of one training step of a
  large-kernel module (forward and backward) through ``'triton'`` and
  ``'native'`` (cuDNN).

``--device cpu`` is a dry run of the same code on tiny shapes (Triton's
interpreter, which needs ``TRITON_INTERPRET=1``; ``perf_counter``
timings, no memory figures), for tests only.
"""

import argparse
import json
import statistics
import time
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..ops import triton_dwconv
from .cuda_benchmark import peak_memory_mib, time_ms
from .timing import SLAK_T_STAGES

DTYPES = dict(bf16=torch.bfloat16, fp16=torch.float16, fp32=torch.float32)
SMALL_KERNEL = 5


def _synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _random_maps(shape, dtype, device, generator) -> List[torch.Tensor]:
    """Input and output gradient, ``(N, C, H, W)`` in channels-last
    memory."""
    maps = torch.randn(2, *shape, generator=generator).to(device, dtype)
    return [m.contiguous(memory_format=torch.channels_last) for m in maps]


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).contiguous()


def weight_grad_first_calls(
    shape: Sequence[int],
    kernel: Sequence[int],
    dtype: torch.dtype,
    device: torch.device,
    calls: int = 2,
) -> List[Dict[str, float]]:
    """Weight gradients of a shape new to the process, call after call.

    Args:
        shape (Sequence[int]): ``(N, C, H, W)``.
        kernel (Sequence[int]): ``(kh, kw)``, within ``2H - 1`` and
            ``2W - 1``.
        dtype (torch.dtype): Dtype of the input and output gradient.
        device (torch.device): CUDA (or CPU under the interpreter).
        calls (int): Calls in a row on the same tensors.

    Returns:
        list[dict]: Per call, ``ms`` (wall time, autotuning included) and
        ``max_rel_error`` (max abs difference over the largest magnitude
        of the fp32 reference).
    """
    generator = torch.Generator().manual_seed(0)
    x, grad_out = _random_maps(shape, dtype, device, generator)
    kh, kw = kernel
    # An fp32 reference without TF32 (cuDNN allows it by default).
    allow_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        expected = torch.nn.grad.conv2d_weight(
            x.float(),
            (shape[1], 1, kh, kw),
            grad_out.float(),
            padding=(kh // 2, kw // 2),
            groups=shape[1],
        )
    finally:
        torch.backends.cudnn.allow_tf32 = allow_tf32
    scale = expected.abs().max().clamp_min(1e-12)
    x_nhwc, grad_nhwc = _nhwc(x), _nhwc(grad_out)
    results = []
    for _ in range(calls):
        _synchronize(device)
        start = time.perf_counter()
        grad = triton_dwconv.conv_weight_grad_nhwc(x_nhwc, grad_nhwc, kh, kw)
        _synchronize(device)
        ms = (time.perf_counter() - start) * 1e3
        error = ((grad - expected).abs().max() / scale).item()
        results.append(dict(ms=ms, max_rel_error=error))
    return results


def time_against_cudnn(
    shape: Sequence[int],
    kernel: Sequence[int],
    dtype: torch.dtype,
    device: torch.device,
    warmup: int,
    repeats: int,
) -> Dict[str, float]:
    """Median milliseconds of the Triton kernels and cuDNN's for one conv.

    Args:
        shape (Sequence[int]): ``(N, C, H, W)``.
        kernel (Sequence[int]): ``(kh, kw)``.
        dtype (torch.dtype): Maps' dtype (weights in fp32 for Triton, as
            parameters under autocast; in ``dtype`` for cuDNN, as autocast
            casts them).
        device (torch.device): CUDA (or CPU under the interpreter).
        warmup (int): Untimed runs first (compiling and autotuning).
        repeats (int): Timed runs.

    Returns:
        dict: ``triton_forward``, ``triton_input_grad``,
        ``triton_weight_grad`` and the three ``cudnn_*`` in ms.
    """
    generator = torch.Generator().manual_seed(0)
    x, grad_out = _random_maps(shape, dtype, device, generator)
    channels = shape[1]
    weight = torch.randn(channels, 1, *kernel, generator=generator)
    weight = weight.to(device)
    padding = (kernel[0] // 2, kernel[1] // 2)
    x_nhwc, grad_nhwc = _nhwc(x), _nhwc(grad_out)
    flipped = weight.flip(2, 3)
    cudnn_weight = weight.to(dtype)

    def cudnn_backward(mask):
        return lambda: torch.ops.aten.convolution_backward(
            grad_out, x, cudnn_weight, None, [1, 1], list(padding),
            [1, 1], False, [0, 0], channels, mask,
        )  # fmt: skip

    steps = dict(
        triton_forward=lambda: triton_dwconv.conv_forward_nhwc(
            x_nhwc, [weight]
        ),
        triton_input_grad=lambda: triton_dwconv.conv_forward_nhwc(
            grad_nhwc, [flipped]
        ),
        triton_weight_grad=lambda: triton_dwconv.conv_weight_grad_nhwc(
            x_nhwc, grad_nhwc, *kernel
        ),
        cudnn_forward=lambda: F.conv2d(
            x, cudnn_weight, padding=padding, groups=channels
        ),
        cudnn_input_grad=cudnn_backward([True, False, False]),
        cudnn_weight_grad=cudnn_backward([False, True, False]),
    )
    with torch.no_grad():
        return {
            name: statistics.median(time_ms(step, device, warmup, repeats))
            for name, step in steps.items()
        }


def module_peak_memory(
    shape: Sequence[int], kernel: int, dtype: torch.dtype, device
) -> Dict[str, Optional[float]]:
    """Peak memory of one training step of a large-kernel module.

    Args:
        shape (Sequence[int]): ``(N, C, H, W)`` of its input.
        kernel (int): Its large kernel K (small kernel 5).
        dtype (torch.dtype): Autocast dtype (fp32: no autocast).
        device (torch.device): CUDA (None on CPU).

    Returns:
        dict: MiB beyond what was allocated before the step (forward and
        backward), for ``'triton'`` and ``'native'``.
    """
    from slak_mm.models.large_kernel import LargeKernelConv

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=generator).to(device)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    peaks = {}
    for backend in ('triton', 'native'):
        module = LargeKernelConv(shape[1], kernel, SMALL_KERNEL).to(device)

        def step(module=module, backend=backend):
            with torch.autocast(
                device.type, dtype=dtype, enabled=dtype != torch.float32
            ):
                out = module(x, backend)
            out.float().sum().backward()

        step()  # compiles and tunes outside the measured step
        peaks[backend] = peak_memory_mib(step, device)
    return peaks


def run(
    device: torch.device,
    dtype: torch.dtype,
    batch: int,
    size: int,
    warmup: int,
    repeats: int,
    max_channels: Optional[int] = None,
) -> dict:
    """The whole check at ``batch`` images of ``size``² (stage maps
    ``size / 4`` ... ``size / 32``, SLaK-T's widths, at most
    ``max_channels`` when given: dry runs); prints as it goes."""
    report = dict(device=str(device), dtype=str(dtype), batch=batch, size=size)
    stages = []
    for index, (kernel, channels) in enumerate(SLAK_T_STAGES):
        side = size >> (2 + index)
        channels = min(channels, max_channels or channels)
        shape = (batch, channels, side, side)
        strip = (min(kernel, 2 * side - 1), min(SMALL_KERNEL, 2 * side - 1))
        stages.append(dict(shape=shape, kernel=strip))
    first = stages[0]
    calls = weight_grad_first_calls(
        first['shape'], first['kernel'], dtype, device
    )
    report['weight_grad_calls'] = dict(
        shape=first['shape'], kernel=first['kernel'], calls=calls
    )
    for number, call in enumerate(calls, 1):
        print(
            f'weight grad {first["shape"]} {first["kernel"]} call {number}: '
            f'{call["ms"]:.1f} ms, max rel error {call["max_rel_error"]:.2e}'
        )
    for stage in stages:
        stage['ms'] = time_against_cudnn(
            stage['shape'], stage['kernel'], dtype, device, warmup, repeats
        )
        ms = stage['ms']
        print(
            f'{stage["shape"]} {stage["kernel"]}: '
            + ', '.join(
                f'{part} triton {ms["triton_" + part]:.3f} / cudnn '
                f'{ms["cudnn_" + part]:.3f} ms'
                for part in ('forward', 'input_grad', 'weight_grad')
            )
        )
    report['stages'] = stages
    peak = module_peak_memory(
        first['shape'], SLAK_T_STAGES[0][0], dtype, device
    )
    report['module_peak_mib'] = peak
    print(f'large-kernel module train step peak MiB {first["shape"]}: {peak}')
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--dtype', choices=tuple(DTYPES), default='bf16')
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--size', type=int, default=512)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument(
        '--max-channels', type=int, help='narrower stages (dry runs)'
    )
    parser.add_argument('--out', help='JSON file for the report')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if not triton_dwconv.available(device):
        parser.error(f'the Triton kernels cannot run on {device}')
    report = run(
        device,
        DTYPES[args.dtype],
        args.batch,
        args.size,
        args.warmup,
        args.repeats,
        args.max_channels,
    )
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
