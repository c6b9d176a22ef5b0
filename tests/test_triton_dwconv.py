"""The Triton depthwise convs against ``F.conv2d`` and autograd.

Without a GPU the kernels run under Triton's interpreter on CPU tensors
(the ``interpreter`` fixture sets ``TRITON_INTERPRET=1`` for one test; the
module builds interpreted kernels for CPU tensors whatever was imported
before). The interpreter is slow (milliseconds per tile operation), so
shapes are small: a few tiles per map, a few channels. Tests marked
``cuda`` compare the compiled kernels with cuDNN and skip without a GPU.
"""

import os

import pytest
import torch
import torch.nn.functional as F

from slak_mm.ops import triton_dwconv
from slak_mm.ops.same_padding import reachable_kernel
from slak_mm.ops.triton_dwconv import (
    available,
    depthwise_conv_pair_same_triton,
    depthwise_conv_same_triton,
    tuning_key,
)

from .helpers import (
    REPO,
    REQUIRES_TRITON_CUDA,
    randomize_batch_norms,
    record_kernel_launches,
)
from .hopper_compile import compile_for_hopper, inner_loop_mix, ptxas_usage

needs_triton = pytest.mark.skipif(
    triton_dwconv.triton is None, reason='Triton is not installed'
)

# Kernel kinds of SLaK: K x s, s x K, s x s, K x K (decompose=False).
KERNEL_KINDS = [(13, 5), (5, 13), (5, 5), (9, 9)]


def relative_error(actual, expected):
    assert actual.shape == expected.shape
    if expected.numel() == 0:
        return 0.0
    expected = expected.detach().double()
    scale = expected.abs().max().clamp_min(1e-12)
    return ((actual.detach().double() - expected).abs().max() / scale).item()


def reference_conv(x, weight, bias=None):
    kh, kw = weight.shape[2:]
    return F.conv2d(
        x, weight, bias, padding=(kh // 2, kw // 2), groups=x.shape[1]
    )


def make_inputs(shape, kernel, dtype, device='cpu', bias=True):
    batch, channels, height, width = shape
    x = torch.randn(shape, device=device).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(channels, 1, *kernel, device=device).to(dtype)
    weight.requires_grad_()
    b = torch.randn(channels, device=device).to(dtype).requires_grad_()
    return x, weight, (b if bias else None)


def check_against_reference(shape, kernel, dtype, tol, device='cpu'):
    """Output and the three gradients vs fp32 F.conv2d + autograd on the
    same (rounded) values."""
    x, weight, bias = make_inputs(shape, kernel, dtype, device)
    out = depthwise_conv_same_triton(x, weight, bias)
    assert out.shape == x.shape and out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (x, weight, bias), grad_out)
    leaves = [t.detach().float().requires_grad_() for t in (x, weight, bias)]
    expected = reference_conv(*leaves)
    expected_grads = torch.autograd.grad(expected, leaves, grad_out.float())
    assert relative_error(out, expected) < tol
    for name, grad, ref in zip(
        ('input', 'weight', 'bias'), grads, expected_grads
    ):
        assert grad.dtype == dtype, name
        assert relative_error(grad, ref) < tol, name


@pytest.mark.parametrize('kernel', KERNEL_KINDS)
def test_fp32_matches_conv2d(interpreter, kernel):
    """Every kernel kind, odd map (several tiles, partial tiles), fp32."""
    check_against_reference((1, 5, 7, 9), kernel, torch.float32, 1e-5)


@pytest.mark.parametrize(
    'dtype,tol', [(torch.bfloat16, 1e-2), (torch.float16, 2e-3)]
)
def test_half_precisions_match_conv2d(interpreter, dtype, tol):
    """bf16/fp16 in and out, fp32 accumulation: only the output rounding."""
    check_against_reference((1, 5, 7, 9), (13, 5), dtype, tol)


@pytest.mark.parametrize('cap_rows', [2, 8, 1000])
def test_batch_and_weight_grad_splits(interpreter, monkeypatch, cap_rows):
    """Several images and columns per weight-gradient split when the cap
    on the partial buffer says so: 3 images, 3 columns (of 4 positions)
    across the 9-wide map, rows of 15 taps x 64 channels. 2 rows: 2
    splits of 1 or 2 columns, one run of 3 images; 8 rows: 3 splits, runs
    of 2 images (the last one short); no cap: one column and one image
    per split."""
    monkeypatch.setattr(
        triton_dwconv, '_MAX_PARTIAL_BYTES', cap_rows * 15 * 64 * 4
    )
    plan = triton_dwconv.plan_weight_grad(
        (3, 5, 9, 3),
        5,
        3,
        [triton_dwconv.INTERPRETER_WEIGHT_GRAD_BLOCKS],
        triton_dwconv._INTERPRETER_PROGRAMS,
    )
    expected = {2: (2, 3, 1), 8: (3, 2, 2), 1000: (3, 1, 3)}[cap_rows]
    splits = (plan.column_programs, plan.images_per_split, plan.runs)
    assert splits == expected
    assert plan.partial_bytes <= triton_dwconv._MAX_PARTIAL_BYTES
    check_against_reference((3, 3, 5, 9), (5, 3), torch.float32, 1e-5)


def autotuned_on_cpu(kernel, configs, key, winner, launched):
    """``triton.autotune`` around the interpreted ``kernel``, with a
    benchmark that runs each candidate once (appending its tile to
    ``launched``) and times candidate ``winner`` fastest: Triton's own
    autotune sequence (every candidate, then the winner) on CPU."""
    import triton

    candidates = triton_dwconv._autotune_configs(configs)

    def bench(kernel_call, quantiles):
        index = len(launched) % len(candidates)  # each key tunes anew
        launched.append(candidates[index].kwargs)
        kernel_call()
        return [1.0 if index == winner else 2.0] * len(quantiles)

    with triton_dwconv._interpret_env(True):
        jitted = triton.jit(kernel)
    return triton.autotune(configs=candidates, key=key, do_bench=bench)(jitted)


@pytest.fixture
def tuned_on_cpu(interpreter, monkeypatch):
    """Sends CPU tensors down the CUDA path (autotuned kernels, sizing by
    multiprocessors), with interpreted kernels. Returns ``tune(winner)``,
    which installs fresh autotuners whose candidate ``winner`` is fastest
    and returns the list of weight-gradient tiles launched."""
    from slak_mm.ops import _triton_dwconv_kernels as kernels

    def tune(winner):
        launched = []
        forward = autotuned_on_cpu(
            kernels.dwconv_forward_kernel,
            triton_dwconv._FORWARD_CONFIGS,
            triton_dwconv._FORWARD_KEY,
            winner,
            [],
        )
        weight_grad = autotuned_on_cpu(
            kernels.dwconv_weight_grad_kernel,
            triton_dwconv._WEIGHT_GRAD_CONFIGS,
            triton_dwconv._WEIGHT_GRAD_KEY,
            winner,
            launched,
        )
        strip_forward = autotuned_on_cpu(
            kernels.dwconv_strip_forward_kernel,
            triton_dwconv._STRIP_CONFIGS,
            triton_dwconv._STRIP_KEY,
            winner,
            [],
        )
        built = (forward, weight_grad, strip_forward)
        monkeypatch.setattr(triton_dwconv, '_kernels', lambda interpret: built)
        return launched

    monkeypatch.setattr(triton_dwconv, '_use_interpreter', lambda x: False)
    monkeypatch.setattr(triton_dwconv, '_multiprocessor_count', lambda i: 1)
    return tune


def expected_weight_grad(x, grad_out, kernel):
    """``torch.nn.grad.conv2d_weight`` of a "same" depthwise conv, NHWC."""
    channels = x.shape[3]
    return torch.nn.grad.conv2d_weight(
        x.permute(0, 3, 1, 2),
        (channels, 1, *kernel),
        grad_out.permute(0, 3, 1, 2),
        padding=(kernel[0] // 2, kernel[1] // 2),
        groups=channels,
    )


@pytest.mark.parametrize('winner', [0, 2])
def test_weight_grad_right_on_the_autotuners_first_call(tuned_on_cpu, winner):
    """The CUDA path's autotuned weight gradient, interpreted: on the first
    call of a shape Triton runs every candidate tiling on the same partial
    buffer, then the winner; the gradient must be the winner's alone
    (stale rows of finer candidates were summed in before, for a coarse
    winner)."""
    launched = tuned_on_cpu(winner)
    # 20 x 40 (walked along H): 5 columns of 8 positions, 3 of 16, 2 of
    # 32; 5 channels, one block.
    x = torch.randn(2, 20, 40, 5)
    grad_out = torch.randn(2, 20, 40, 5)
    expected = expected_weight_grad(x, grad_out, (5, 3))
    for call in range(2):
        grad = triton_dwconv.conv_weight_grad_nhwc(x, grad_out, 5, 3)
        assert relative_error(grad, expected) < 1e-5, call
    # The first call timed every candidate, the second reused the winner.
    assert len(launched) == len(triton_dwconv._WEIGHT_GRAD_CONFIGS)


def test_capped_plan_on_the_tuned_path(tuned_on_cpu, monkeypatch):
    """The CUDA path under a cap of 2 partial rows: 2 splits over the 3
    columns of 32 positions across (the 8-wide candidate loops over 4 or
    5 columns each), every image in one run; right on the autotuner's
    first call and after."""
    plans = []
    plan_weight_grad = triton_dwconv.plan_weight_grad

    def spy(*args, **kwargs):
        plans.append(plan_weight_grad(*args, **kwargs))
        return plans[-1]

    monkeypatch.setattr(triton_dwconv, 'plan_weight_grad', spy)
    monkeypatch.setattr(triton_dwconv, '_MAX_PARTIAL_BYTES', 2 * 15 * 64 * 4)
    tuned_on_cpu(winner=0)
    x, grad_out = torch.randn(2, 3, 20, 70, 5).unbind(0)
    expected = expected_weight_grad(x, grad_out, (5, 3))
    for call in range(2):
        grad = triton_dwconv.conv_weight_grad_nhwc(x, grad_out, 5, 3)
        assert relative_error(grad, expected) < 1e-5, call
    assert plans[0] == triton_dwconv.WeightGradPlan(2, 3, 1, 2 * 15 * 64 * 4)


# SLaK-T's stages at 512^2 x16: (channels, map side, large kernel).
SLAK_T_STAGES_512 = [
    (124, 128, 51),
    (249, 64, 49),
    (499, 32, 47),
    (998, 16, 13),
]


@pytest.mark.parametrize('channels,side,large', SLAK_T_STAGES_512)
def test_planned_bytes_at_slak_t_stages(channels, side, large):
    """Every conv of a large-kernel module (``K x 5``, ``5 x K``, ``5 x
    5``) in bf16: the module's one input copy padded by ``K // 2`` on both
    axes, each conv's padded output gradient, the input padded along
    channels, the results, and the weight gradient's partial buffer
    within the cap (it grew with the map before: 33 MB for 51 x 5 at
    128^2 with 8 x 8 tiles)."""
    padded = triton_dwconv.padded_channels(channels)
    halo = large // 2
    padded_input = 16 * (side + 2 * halo) ** 2 * padded * 2
    output = 16 * side * side * channels * 2
    for kh, kw in ((large, 5), (5, large), (5, 5)):
        plans = triton_dwconv.plan_bytes(
            (16, channels, side, side), (kh, kw), halo=(halo, halo)
        )
        taps = 4 * kh * kw * padded
        padded_grad = 16 * (side + kh - 1) * (side + kw - 1) * padded * 2
        assert plans['forward'] == dict(
            padded_input=padded_input,
            weights=taps,
            output=output,
            total=padded_input + taps + output,
        )
        assert plans['input_grad'] == dict(
            padded_grad=padded_grad,
            weights=taps,
            output=output,
            total=padded_grad + taps + output,
        )
        weight_grad = plans['weight_grad']
        assert weight_grad['padded_grad'] == padded_grad
        assert weight_grad['input_rows'] == 16 * side * side * padded * 2
        row = 4 * kh * kw * padded
        assert weight_grad['partial'] % row == 0
        assert weight_grad['partial'] <= triton_dwconv._MAX_PARTIAL_BYTES
    stage_0_strip = triton_dwconv.plan_bytes((16, 124, 128, 128), (51, 5))
    assert stage_0_strip['weight_grad']['partial'] == 522_240
    # A single conv's input copy is padded by its own halves.
    assert stage_0_strip['forward']['padded_input'] == (
        16 * (128 + 50) * (128 + 4) * 128 * 2
    )


def test_planned_input_rows_vanish_for_aligned_channels():
    plans = triton_dwconv.plan_bytes((2, 128, 16, 16), (13, 5))
    assert plans['weight_grad']['input_rows'] == 0


@pytest.mark.parametrize(
    'kernels',
    [[(13, 5), (5, 13)], [(3, 3), (5, 5)], [(21, 5), (5, 21)]],
    ids=['sliding windows', 'tap loop', 'cropped to the map'],
)
def test_planned_pair_bytes_are_the_pairs_allocations(
    interpreter, monkeypatch, kernels
):
    """Eval pair: the padded input, both kernels taps-last, the fp32 sum
    between the two sliding windows (none for a short pair) and the
    output, as ``plan_pair_bytes`` plans them; at SLaK-T's stage 0 for
    512^2 x16 the sum is 134.2 MB."""
    allocated = dict(padded_input=0, weights=0, sum=0)

    def recording(name, function):
        def record(*args, **kwargs):
            result = function(*args, **kwargs)
            allocated[name] += result.numel() * result.element_size()
            return result

        monkeypatch.setattr(triton_dwconv, function.__name__, record)

    recording('padded_input', triton_dwconv.pad_map)
    recording('weights', triton_dwconv._taps_last)
    strip = triton_dwconv._strip_forward

    def strip_recording(*args, prior=None, **kwargs):
        out = args[7]
        if out.dtype == torch.float32 and out.shape[3] % 64 == 0:
            allocated['sum'] += out.numel() * 4
        return strip(*args, prior=prior, **kwargs)

    monkeypatch.setattr(triton_dwconv, '_strip_forward', strip_recording)
    shape = (2, 10, 9, 7)
    x = torch.randn(shape).to(torch.bfloat16)
    weights = [torch.randn(10, 1, *kernel) for kernel in kernels]
    with torch.no_grad():
        out = depthwise_conv_pair_same_triton(x, *weights)
    plan = triton_dwconv.plan_pair_bytes(shape, kernels)
    assert plan['output'] == out.numel() * out.element_size()
    for name, size in allocated.items():
        assert plan[name] == size, name
    assert (plan['sum'] > 0) == (max(max(k) for k in kernels) >= 9)
    stage_0 = triton_dwconv.plan_pair_bytes(
        (16, 124, 128, 128), [(51, 5), (5, 51)]
    )
    assert stage_0['sum'] == 16 * 128 * 128 * 128 * 4


@pytest.mark.parametrize('side', [128, 512])
def test_planned_partial_of_a_51x51_kernel_is_capped(side):
    """``decompose=False`` at stage 0 of a 512^2 input and on a 512^2 map:
    the partial buffer stays within 128 MiB (5.45 GB on 512^2 before the
    cap; 5.3 and 21 MB once a split's tap programs share its row)."""
    plans = triton_dwconv.plan_bytes((16, 124, side, side), (51, 51))
    partial = plans['weight_grad']['partial']
    assert partial <= triton_dwconv._MAX_PARTIAL_BYTES
    assert partial == {128: 5_326_848, 512: 21_307_392}[side]


def test_plan_of_an_empty_batch_allocates_nothing():
    plan = triton_dwconv.plan_weight_grad(
        (0, 16, 16, 8),
        5,
        5,
        [triton_dwconv.INTERPRETER_WEIGHT_GRAD_BLOCKS],
        64,
    )
    assert plan == triton_dwconv.WeightGradPlan(0, 0, 0, 0)
    plans = triton_dwconv.plan_bytes((0, 8, 16, 16), (5, 5))
    assert plans['weight_grad'] == dict(weight_grad=4 * 25 * 8, total=800)


@pytest.mark.parametrize('path', ['interpreter', 'tuned'])
@pytest.mark.parametrize(
    'shape,kernel',
    [
        ((0, 3, 5, 6), (13, 5)),  # empty batch
        ((0, 3, 1, 1), (5, 51)),  # empty batch, 1 x 1 map
        ((2, 3, 1, 1), (13, 13)),  # 1 x 1 map, kernel cropped to 1 x 1
        ((2, 3, 2, 3), (51, 51)),  # kernel larger than the map both ways
    ],
)
def test_degenerate_inputs(request, interpreter, path, shape, kernel):
    """Forward and the three gradients on both paths (fixed interpreter
    tiles, and the CUDA path's sizing and autotuned tiles): empty batches
    give empty outputs and zero parameter gradients."""
    if path == 'tuned':
        request.getfixturevalue('tuned_on_cpu')(winner=2)
    check_against_reference(shape, kernel, torch.float32, 1e-5)


@pytest.mark.parametrize(
    'shape,kernel,dtype,tol',
    [
        ((1, 3, 19, 6), (13, 5), torch.float32, 1e-5),  # 3 windows of 8
        ((1, 3, 5, 10), (5, 13), torch.bfloat16, 1e-2),  # along W
        ((1, 3, 10, 11), (11, 11), torch.float32, 1e-5),  # 11 across too
        ((1, 3, 17, 5), (31, 3), torch.float32, 1e-5),  # K > the map
    ],
)
def test_strip_kernel_matches_conv2d(interpreter, shape, kernel, dtype, tol):
    """Long single kernels take the sliding-window kernel: windows of 8
    along the long axis, the last one partial, tiles across partial."""
    cropped = reachable_kernel(torch.empty(0, 1, *kernel), *shape[2:])
    assert triton_dwconv.uses_strip_kernel([cropped.shape[2:]])
    check_against_reference(shape, kernel, dtype, tol)


def test_strip_kernel_on_the_tuned_path(tuned_on_cpu):
    """The autotuned sliding-window kernel (every candidate, then the
    winner, on one output) and the weight gradient, CUDA path."""
    tuned_on_cpu(winner=1)
    check_against_reference((2, 3, 9, 20), (5, 13), torch.float32, 1e-5)


def test_short_kernels_keep_the_tap_loop():
    """Singles and pairs with a kernel of 9 taps or more take the sliding
    window (SLaK-T's strips, in eval as pairs); all-short ones the tap
    loop."""
    assert triton_dwconv.uses_strip_kernel([(9, 5)])
    assert triton_dwconv.uses_strip_kernel([(5, 51)])
    assert not triton_dwconv.uses_strip_kernel([(5, 5)])
    assert not triton_dwconv.uses_strip_kernel([(7, 7)])
    for kernel in (51, 49, 47, 13):
        assert triton_dwconv.uses_strip_kernel([(kernel, 5), (5, kernel)])
    assert triton_dwconv.uses_strip_kernel([(9, 5), (5, 5)])
    assert not triton_dwconv.uses_strip_kernel([(7, 3), (3, 7)])


@pytest.mark.parametrize(
    'size,kernel', [((3, 4), (13, 13)), ((5, 2), (5, 51)), ((1, 1), (5, 5))]
)
def test_kernel_larger_than_map(interpreter, size, kernel):
    """Cropped to the reachable window; the cropped-off taps get zero
    gradient, as they do from F.conv2d."""
    check_against_reference((1, 3, *size), kernel, torch.float32, 1e-5)


def test_crop_reaches_the_kernels(interpreter, monkeypatch):
    seen = []
    forward = triton_dwconv.conv_forward_nhwc

    def spy(x, weights, bias=None):
        seen.append([tuple(w.shape[2:]) for w in weights])
        return forward(x, weights, bias)

    monkeypatch.setattr(triton_dwconv, 'conv_forward_nhwc', spy)
    x = torch.randn(1, 2, 3, 6)
    with torch.no_grad():
        depthwise_conv_same_triton(x, torch.randn(2, 1, 51, 5))
    assert seen == [[(5, 5)]]


def test_nchw_input_and_no_bias(interpreter):
    """Contiguous NCHW input works too (one layout copy)."""
    x = torch.randn(1, 3, 6, 5, requires_grad=True)
    weight = torch.randn(3, 1, 3, 7, requires_grad=True)
    out = depthwise_conv_same_triton(x, weight)
    out.square().sum().backward()
    x2 = x.detach().requires_grad_()
    w2 = weight.detach().requires_grad_()
    reference_conv(x2, w2).square().sum().backward()
    assert relative_error(out, reference_conv(x2, w2)) < 1e-5
    assert relative_error(x.grad, x2.grad) < 1e-5
    assert relative_error(weight.grad, w2.grad) < 1e-5


# The eval pair's two strips, each on its own sliding window: the first
# (along H) with the bias into the fp32 sum, the second (along W) adding it.
PAIR_STRIP_LAUNCHES = [
    ('strip_forward', dict(ALONG_W=False, HAS_BIAS=True, ACCUMULATE=False)),
    ('strip_forward', dict(ALONG_W=True, HAS_BIAS=False, ACCUMULATE=True)),
]


def pair_inputs(shape, kernel, dtype):
    """Channels-last ``x`` in ``dtype``, fp32 ``K x 5`` and ``5 x K``
    strips and a bias (eval-mode BN-folded weights stay fp32)."""
    x = torch.randn(shape).to(dtype)
    channels = shape[1]
    return (
        x.contiguous(memory_format=torch.channels_last),
        torch.randn(channels, 1, kernel, 5),
        torch.randn(channels, 1, 5, kernel),
        torch.randn(channels),
    )


def reference_pair(x, vertical, horizontal, bias):
    """The pair in fp64 on the same (rounded) input values."""
    return reference_conv(
        x.double(), vertical.double(), bias.double()
    ) + reference_conv(x.double(), horizontal.double())


@pytest.mark.parametrize(
    'shape,kernel,launched',
    [
        ((2, 5, 11, 13), 13, PAIR_STRIP_LAUNCHES),  # partial windows
        ((1, 70, 10, 9), 9, PAIR_STRIP_LAUNCHES),  # two channel blocks
        # Larger than the map on both axes, cropped to 9 x 5 and 5 x 11.
        ((1, 3, 5, 6), 31, PAIR_STRIP_LAUNCHES),
        # Cropped to 5 x 5 and 5 x 7: one tap-loop pass.
        (
            (1, 3, 3, 4),
            51,
            [('forward', dict(HAS_SECOND=True, HAS_BIAS=True))],
        ),
        (
            (1, 3, 1, 1),
            13,
            [('forward', dict(HAS_SECOND=True, HAS_BIAS=True))],
        ),
        ((0, 3, 5, 6), 13, []),  # nothing to launch
    ],
)
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_eval_pair_runs_the_sliding_window(
    interpreter, monkeypatch, shape, kernel, launched, dtype
):
    """The eval pair of long strips launches two sliding windows (the
    second adding the first's fp32 sum), short ones one tap-loop pass;
    the output matches the convs in fp64 up to one rounding to the
    output's dtype."""
    launches = record_kernel_launches(monkeypatch)
    x, vertical, horizontal, bias = pair_inputs(shape, kernel, dtype)
    with torch.no_grad():
        out = depthwise_conv_pair_same_triton(x, vertical, horizontal, bias)
    assert launches == launched
    assert out.shape == x.shape and out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last)
    expected = reference_pair(x, vertical, horizontal, bias)
    if expected.numel():
        tol = 1e-5 if dtype == torch.float32 else 1e-2
        assert relative_error(out, expected) < tol


def test_bf16_pair_is_rounded_once(interpreter):
    """bf16: each output is the fp32 sum of both strips and the bias
    rounded once to bf16 (within one bf16 unit of the exact value, up to
    fp32 summation error: the interpreter truncates), as the one-pass
    tap-loop pair gives it; a bf16 intermediate would add a rounding of
    the first strip's sum, larger where the two strips cancel."""
    x, vertical, horizontal, bias = pair_inputs(
        (2, 8, 12, 10), 13, torch.bfloat16
    )
    with torch.no_grad():
        out = depthwise_conv_pair_same_triton(x, vertical, horizontal, bias)
    expected = reference_pair(x, vertical, horizontal, bias)
    # One bf16 unit at each expected value (8 significant bits).
    ulp = 2.0 ** (torch.frexp(expected).exponent - 8)
    slack = 1e-5 * expected.abs().max()
    assert ((out.double() - expected).abs() <= ulp + slack).all()


def test_pair_on_the_tuned_path(tuned_on_cpu, monkeypatch):
    """The autotuned sliding windows of the pair (every candidate, then
    the winner, on the same buffers: the second pass reads a sum it does
    not write), CUDA path."""
    tuned_on_cpu(winner=3)
    launches = record_kernel_launches(monkeypatch)
    x, vertical, horizontal, bias = pair_inputs(
        (2, 5, 9, 11), 13, torch.float32
    )
    with torch.no_grad():
        out = depthwise_conv_pair_same_triton(x, vertical, horizontal, bias)
    assert launches == PAIR_STRIP_LAUNCHES
    expected = reference_pair(x, vertical, horizontal, bias)
    assert relative_error(out, expected) < 1e-5


def test_pair_kernel_is_differentiable(interpreter):
    x = torch.randn(1, 3, 5, 6, requires_grad=True)
    weights = [
        torch.randn(3, 1, 7, 3, requires_grad=True),
        torch.randn(3, 1, 3, 7, requires_grad=True),
    ]
    bias = torch.randn(3, requires_grad=True)
    out = depthwise_conv_pair_same_triton(x, *weights, bias)
    leaves = (x, *weights, bias)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, leaves, grad_out)
    expected = reference_conv(x, weights[0], bias) + reference_conv(
        x, weights[1]
    )
    expected_grads = torch.autograd.grad(expected, leaves, grad_out)
    assert relative_error(out, expected) < 1e-5
    for grad, ref in zip(grads, expected_grads):
        assert relative_error(grad, ref) < 1e-5


def test_autocast_casts_the_input(interpreter):
    x = torch.randn(1, 3, 5, 6)
    weight = torch.randn(3, 1, 5, 3)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        out = depthwise_conv_same_triton(x, weight)
    assert out.dtype == torch.bfloat16
    expected = reference_conv(x.bfloat16().float(), weight)
    assert relative_error(out, expected) < 1e-2


def test_bad_inputs_name_the_problem(interpreter):
    x = torch.randn(1, 4, 5, 5)
    with pytest.raises(ValueError, match='odd'):
        depthwise_conv_same_triton(x, torch.randn(4, 1, 4, 5))
    with pytest.raises(ValueError, match='C=4'):
        depthwise_conv_same_triton(x, torch.randn(3, 1, 5, 5))
    with pytest.raises(ValueError, match='float64'):
        depthwise_conv_same_triton(x.double(), torch.randn(4, 1, 5, 5))
    with pytest.raises(ValueError, match='bias'):
        depthwise_conv_same_triton(x, torch.randn(4, 1, 5, 5), torch.randn(3))


@needs_triton
def test_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    assert not available('cpu')
    with pytest.raises(RuntimeError, match='TRITON_INTERPRET'):
        depthwise_conv_same_triton(
            torch.randn(1, 2, 3, 3), torch.randn(2, 1, 3, 3)
        )


def test_available_without_triton(monkeypatch):
    monkeypatch.setattr(triton_dwconv, 'triton', None)
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    assert not available()
    assert not available('cpu')
    with pytest.raises(RuntimeError, match='triton'):
        triton_dwconv.conv_forward_nhwc(
            torch.randn(1, 3, 3, 2), [torch.randn(2, 1, 3, 3)]
        )


def test_import_needs_neither_triton_nor_the_toolkits():
    """slak_mm, the kernels' modules and the CUDA benchmark import where
    Triton is missing (then unavailable) and without mmcv, mmdet, mmseg
    and mmpretrain (the GPU machine has mmengine only)."""
    import subprocess
    import sys

    code = (
        'import sys\n'
        'for name in ("triton", "mmcv", "mmdet", "mmseg", "mmpretrain"):\n'
        '    sys.modules[name] = None\n'
        'from slak_mm.ops import triton_dwconv as t\n'
        'assert t.triton is None and not t.available()\n'
        'from slak_mm.models.backends import get_backend\n'
        'assert get_backend("auto", "cuda").name == "native"\n'
        'from slak_mm.analysis import cuda_benchmark\n'
        'cuda_benchmark.build_backbone("slak_t_triton")\n'
    )
    subprocess.run([sys.executable, '-c', code], check=True)


FORWARD_BLOCKS = dict(BLOCK_H=8, BLOCK_W=8, BLOCK_C=32)


@needs_triton
@pytest.mark.parametrize(
    'name,dtype,constexprs',
    [
        (
            'dwconv_forward_kernel',
            'bf16',
            dict(HAS_SECOND=True, HAS_BIAS=True, **FORWARD_BLOCKS),
        ),
        (
            'dwconv_forward_kernel',
            'fp32',
            dict(HAS_SECOND=False, HAS_BIAS=False, **FORWARD_BLOCKS),
        ),
        (
            'dwconv_weight_grad_kernel',
            'bf16',
            dict(ALONG_W=False, BLOCK_X=16, BLOCK_C=64),
        ),
        (
            'dwconv_weight_grad_kernel',
            'bf16',
            dict(ALONG_W=True, BLOCK_X=16, BLOCK_C=64),
        ),
    ],
)
def test_kernels_compile_for_hopper_with_128_bit_loads(
    monkeypatch, name, dtype, constexprs
):
    """Without a GPU: the kernels compile to an sm_90 binary, and every
    global load reads 128 bits (channel rows padded and aligned, so SLaK's
    odd widths do not fall back to one element per load)."""
    import re

    from slak_mm.ops import _triton_dwconv_kernels as kernels

    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    asm = compile_for_hopper(getattr(kernels, name), dtype, constexprs)
    assert asm['cubin']
    loads = set(re.findall(r'ld\.global[.a-z0-9]*', asm['ptx']))
    assert loads == {'ld.global.v4.b32'}


def _compile_configs(name, dtype):
    """(tile, asm) of every autotuning candidate of kernel ``name``
    (``'forward'``, one conv; ``'strip_forward'``, ``'strip_accumulate'``
    (the eval pair's second pass, adding an fp32 sum) and
    ``'weight_grad'``, along H then W) compiled for sm_90."""
    from slak_mm.ops import _triton_dwconv_kernels as kernels

    if name == 'forward':
        kernel = kernels.dwconv_forward_kernel
        configs = triton_dwconv._FORWARD_CONFIGS
        variants = [dict(HAS_SECOND=False, HAS_BIAS=False)]
    elif name.startswith('strip_'):
        kernel = kernels.dwconv_strip_forward_kernel
        configs = triton_dwconv._STRIP_CONFIGS
        accumulate = name == 'strip_accumulate'
        variants = [
            dict(ALONG_W=along_w, HAS_BIAS=False, ACCUMULATE=accumulate)
            for along_w in (False, True)
        ]
    else:
        kernel = kernels.dwconv_weight_grad_kernel
        configs = triton_dwconv._WEIGHT_GRAD_CONFIGS
        variants = [dict(ALONG_W=along_w) for along_w in (False, True)]
    for flags in variants:
        for config in configs:
            blocks = {k: v for k, v in config.items() if k != 'num_warps'}
            asm = compile_for_hopper(
                kernel, dtype, {**flags, **blocks}, config['num_warps']
            )
            yield dict(**flags, **config), asm


KERNEL_NAMES = ('forward', 'strip_forward', 'strip_accumulate', 'weight_grad')
# The tiles whose inner loops the CUDA benchmark's bound assumes.
BOUND_MODEL_TILES = dict(
    forward=dict(BLOCK_H=8, BLOCK_W=8, BLOCK_C=32, num_warps=4),
    strip_forward=dict(BLOCK_X=32, BLOCK_C=64, num_warps=4, ALONG_W=False),
    strip_accumulate=dict(BLOCK_X=32, BLOCK_C=64, num_warps=4, ALONG_W=False),
    weight_grad=dict(BLOCK_X=16, BLOCK_C=64, num_warps=4, ALONG_W=False),
)


@needs_triton
@pytest.mark.parametrize('dtype', ['bf16', 'fp32'])
def test_bound_model_mix_is_the_compiled_inner_loops(monkeypatch, dtype):
    """The instructions per FFMA that the CUDA benchmark's bound assumes
    are those of the compiled sm_90 inner loops of Triton 3.8 (other
    versions compile other loops)."""
    import triton

    from slak_mm.analysis.cuda_benchmark import INSTRUCTIONS_PER_FFMA

    if not triton.__version__.startswith('3.8'):
        pytest.skip(f'counted with Triton 3.8, not {triton.__version__}')
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    for name in KERNEL_NAMES:
        for config, asm in _compile_configs(name, dtype):
            if BOUND_MODEL_TILES[name].items() <= config.items():
                instructions, ffmas = inner_loop_mix(asm['cubin'])
                expected = INSTRUCTIONS_PER_FFMA[dtype][name]
                assert instructions / ffmas == pytest.approx(expected), name


@needs_triton
@pytest.mark.parametrize(
    'name,bound,before',
    [
        ('strip_forward', 2.0, 3.94),
        ('strip_accumulate', 2.0, 3.94),
        ('weight_grad', 2.5, 6.19),
    ],
)
def test_inner_loops_near_the_issue_bound(monkeypatch, name, bound, before):
    """bf16, every candidate tile, walks along H and along W, sm_90: the
    sliding-window forward issues at most 2 instructions per FFMA in its
    inner loop (1.50-1.78 on Triton 3.8 and 3.6; the tap-loop forward took
    3.94), and so does its accumulating variant, the eval pair's second
    pass (1.50-1.73 on Triton 3.8; the tap-loop pair took 3.94); the
    line-walking weight gradient at most 2.5 (1.66-1.69 on Triton 3.8,
    1.70-1.80 on 3.6; the tap-loop weight gradient took 5.97-6.19)."""
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    for config, asm in _compile_configs(name, 'bf16'):
        instructions, ffmas = inner_loop_mix(asm['cubin'])
        assert instructions / ffmas <= bound < before, config


@needs_triton
@pytest.mark.parametrize('dtype', ['bf16', 'fp32'])
def test_no_spills_in_any_tile_config(monkeypatch, dtype):
    """Every autotuning candidate of the three kernels (and of the sliding
    window's accumulating variant) fits its registers
    on sm_90 (``ptxas -v``: no spill stores or loads)."""
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    for name in KERNEL_NAMES:
        for config, asm in _compile_configs(name, dtype):
            registers, spilled = ptxas_usage(asm['ptx'])
            assert spilled == 0, (name, config, registers)


# Run in a fresh interpreter: Triton is imported with or without
# TRITON_INTERPRET=1, then the kernels are compiled for sm_90 and the
# weight gradient (the kernel with the sum over positions) is interpreted.
_BOTH_MODES_SCRIPT = """
import os, sys
if sys.argv[1] == 'interpreter':
    os.environ['TRITON_INTERPRET'] = '1'
import triton
os.environ.pop('TRITON_INTERPRET', None)
import torch
from slak_mm.ops import _triton_dwconv_kernels as kernels, triton_dwconv
from tests.hopper_compile import compile_for_hopper
triton_dwconv._kernels(False)  # builds the CUDA path's compiled kernels
blocks = dict(BLOCK_H=8, BLOCK_W=8, BLOCK_C=32)
compile_for_hopper(
    kernels.dwconv_forward_kernel, 'bf16',
    dict(HAS_SECOND=True, HAS_BIAS=True, **blocks),
)
compile_for_hopper(
    kernels.dwconv_weight_grad_kernel, 'bf16',
    dict(ALONG_W=False, BLOCK_X=16, BLOCK_C=64),
)
compile_for_hopper(
    kernels.dwconv_strip_forward_kernel, 'bf16',
    dict(ALONG_W=True, HAS_BIAS=True, ACCUMULATE=True, BLOCK_X=16, BLOCK_C=64),
)
os.environ['TRITON_INTERPRET'] = '1'
x, grad_out = torch.randn(2, 2, 5, 7, 3).unbind(0)
grad = triton_dwconv.conv_weight_grad_nhwc(x, grad_out, 3, 5)
expected = torch.nn.grad.conv2d_weight(
    x.permute(0, 3, 1, 2), (3, 1, 3, 5), grad_out.permute(0, 3, 1, 2),
    padding=(1, 2), groups=3,
)
assert torch.allclose(grad, expected, atol=1e-5), (grad - expected).abs().max()
"""


@needs_triton
@pytest.mark.parametrize('first_import', ['interpreter', 'compiled'])
def test_kernels_compile_and_interpret_whatever_triton_was_imported_as(
    tmp_path, first_import
):
    """No ``@triton.jit`` helper of Triton's library (compiled or
    interpreted as chosen at Triton's first import) is called: the kernels
    compile for sm_90 and run under the interpreter in one process,
    whichever mode Triton was first imported in."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    # An empty cache: really compile (a cached binary skips the compiler).
    env.update(PYTHONPATH=REPO, TRITON_CACHE_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, '-c', _BOTH_MODES_SCRIPT, first_import],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@needs_triton
def test_compiled_kernels_build_without_a_gpu(monkeypatch):
    """The CUDA kernels are autotuned JIT functions whose keys name real
    arguments, and every candidate channel block divides the channel
    padding (so channel blocks need no mask)."""
    import inspect

    from slak_mm.ops import _triton_dwconv_kernels as kernels

    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    forward, weight_grad, strip_forward = triton_dwconv._kernels(False)
    for tuner, fn in (
        (forward, kernels.dwconv_forward_kernel),
        (weight_grad, kernels.dwconv_weight_grad_kernel),
        (strip_forward, kernels.dwconv_strip_forward_kernel),
    ):
        assert type(tuner).__name__ == 'Autotuner'
        names = set(inspect.signature(fn).parameters)
        assert set(tuner.keys) <= names
        for config in tuner.configs:
            assert set(config.kwargs) <= names
            block_c = config.kwargs['BLOCK_C']
            assert triton_dwconv.CHANNEL_ALIGN % block_c == 0


def tiny_slak(**kwargs):
    """A narrow SLaK, all kernels 2-9 taps long (kept cheap under the
    interpreter)."""
    from slak_mm.models import SLaK

    model = SLaK(
        arch=dict(depths=[1, 1, 1, 1], channels=[8, 8, 8, 8]),
        kernel_sizes=[9, 7, 5, 5],
        small_kernel=3,
        out_indices=(0, 1, 2, 3),
        layer_scale_init_value=1.0,
        **kwargs,
    )
    randomize_batch_norms(model)
    return model


def linear_loss(outs):
    """A fixed linear functional of the outputs: well-conditioned gradients
    (the squared norm of LayerNorm outputs would cancel)."""
    return sum(
        (
            out.float()
            * torch.linspace(-1, 1, out.numel()).view_as(out).to(out.device)
        ).sum()
        for out in outs
    )


def compare_backbone(model, images, train, tol):
    """Outputs and parameter gradients, backend 'native' (cuDNN) vs
    'triton'."""
    from slak_mm.models.backends import use_backend

    model.train(train)
    results = []
    for backend in ('native', 'triton'):
        model.zero_grad(set_to_none=True)
        with use_backend(model, backend):
            outs = model(images)
        linear_loss(outs).backward()
        grads = {
            name: param.grad.clone()
            for name, param in model.named_parameters()
            if param.grad is not None
        }
        results.append(([out.detach() for out in outs], grads))
    (outs, grads), (triton_outs, triton_grads) = results
    for out, triton_out in zip(outs, triton_outs):
        assert relative_error(triton_out, out) < tol
    assert grads.keys() == triton_grads.keys()
    for name, grad in grads.items():
        assert relative_error(triton_grads[name], grad) < tol, name


# ---------------------------------------------------------------- CUDA only


@pytest.mark.cuda
@REQUIRES_TRITON_CUDA
@pytest.mark.parametrize('kernel', [(51, 5), (5, 51), (5, 5), (31, 31)])
@pytest.mark.parametrize(
    'dtype,tol',
    [(torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)],
)
@pytest.mark.parametrize('shape', [(2, 124, 56, 56), (3, 37, 13, 29)])
def test_cuda_kernels_match_cudnn(exact_fp32, kernel, dtype, tol, shape):
    check_against_reference(shape, kernel, dtype, tol, device='cuda')


@pytest.mark.cuda
@REQUIRES_TRITON_CUDA
def test_cuda_pair_kernel_matches_cudnn(exact_fp32):
    x = torch.randn(4, 249, 28, 28, device='cuda')
    x = x.contiguous(memory_format=torch.channels_last)
    vertical = torch.randn(249, 1, 49, 5, device='cuda')
    horizontal = torch.randn(249, 1, 5, 49, device='cuda')
    bias = torch.randn(249, device='cuda')
    with torch.no_grad():
        out = depthwise_conv_pair_same_triton(x, vertical, horizontal, bias)
        expected = reference_conv(x, vertical, bias) + reference_conv(
            x, horizontal
        )
    assert relative_error(out, expected) < 1e-5


@pytest.mark.cuda
@REQUIRES_TRITON_CUDA
@pytest.mark.parametrize('train', [True, False])
def test_cuda_backbone_through_triton_matches_cudnn(exact_fp32, train):
    model = tiny_slak().cuda()
    images = torch.randn(2, 3, 96, 96, device='cuda')
    images = images.contiguous(memory_format=torch.channels_last)
    compare_backbone(model, images, train, 1e-4)


@pytest.mark.cuda
@REQUIRES_TRITON_CUDA
def test_cuda_slak_t_under_bf16_autocast():
    """SLaK-T's real kernel sizes and widths, one train step under bf16
    autocast: outputs close to cuDNN's under the same autocast, gradients
    finite and aligned with cuDNN's."""
    from slak_mm.models import SLaK
    from slak_mm.models.backends import use_backend

    model = SLaK(
        arch='tiny', out_indices=(0, 1, 2, 3), layer_scale_init_value=1.0
    ).cuda()
    images = torch.randn(2, 3, 128, 128, device='cuda')
    images = images.contiguous(memory_format=torch.channels_last)
    results = []
    for backend in ('native', 'triton'):
        model.zero_grad(set_to_none=True)
        with (
            use_backend(model, backend),
            torch.autocast('cuda', dtype=torch.bfloat16),
        ):
            outs = model(images)
        linear_loss(outs).backward()
        grads = [p.grad.float().flatten() for p in model.parameters()]
        results.append(([out.float() for out in outs], grads))
    (outs, grads), (triton_outs, triton_grads) = results
    for out, triton_out in zip(outs, triton_outs):
        assert relative_error(triton_out, out) < 5e-2
    for grad, triton_grad in zip(grads, triton_grads):
        assert torch.isfinite(triton_grad).all()
        if grad.abs().max() == 0 and triton_grad.abs().max() == 0:
            continue
        similarity = F.cosine_similarity(grad, triton_grad, dim=0)
        assert similarity > 0.99


# ------------------------------------------------- tuning keys per epoch

DETECTION_3X = 'configs/detection/cascade_mask_rcnn_slak_t_fpn_3x_coco.py'
# COCO train2017 with at least one annotation; its images have a long
# side of 640 (COCO's convention).
COCO_TRAIN_IMAGES = 117_266


def resized_shape(pipeline, size, rng):
    """``(h, w)`` of an image of ``size`` ``(h, w)`` after the
    shape-changing steps of a training pipeline (``RandomChoice``,
    ``RandomChoiceResize`` with kept ratio, ``RandomCrop`` of an absolute
    range), drawing as those transforms do."""
    from mmcv import rescale_size

    h, w = size
    for step in pipeline:
        kind = step['type']
        if kind == 'RandomChoice':
            branch = rng.choice(step['transforms'])
            h, w = resized_shape(branch, (h, w), rng)
        elif kind == 'RandomChoiceResize':
            assert step['keep_ratio']
            scale = tuple(rng.choice(step['scales']))
            w, h = rescale_size((w, h), scale)
        elif kind == 'RandomCrop':
            assert step['crop_type'] == 'absolute_range'
            low, high = step['crop_size']
            h = rng.randint(min(h, low), min(h, high))
            w = rng.randint(min(w, low), min(w, high))
        else:
            assert kind in ('LoadImageFromFile', 'LoadAnnotations',
                            'RandomFlip', 'PackDetInputs'), kind  # fmt: skip
    return h, w


def epoch_tuning_keys(image_sizes, seed=0):
    """Distinct autotuning keys of the large-kernel convs of SLaK-T in one
    training epoch of the 3x detection config, with the keys of the
    original code (exact batch, map and channels) and the current ones.

    Args:
        image_sizes (Callable): ``rng -> (h, w)`` of the next image.

    Returns:
        dict: ``{'before': n, 'after': n, 'batch_shapes': n}``.
    """
    import random

    from mmengine.config import Config

    config = Config.fromfile(os.path.join(REPO, DETECTION_3X))
    pipeline = config.train_pipeline
    batch = config.train_dataloader.batch_size
    divisor = config.model.data_preprocessor.pad_size_divisor
    backbone = config.model.backbone
    assert backbone.arch == 'tiny' and backbone.width_factor == 1.3
    stages = list(zip((124, 249, 499, 998), backbone.kernel_sizes))
    small = backbone.small_kernel
    rng = random.Random(seed)
    batch_shapes = set()
    for _ in range(COCO_TRAIN_IMAGES // batch):
        shapes = [
            resized_shape(pipeline, image_sizes(rng), rng)
            for _ in range(batch)
        ]
        # Padded to the batch's largest sides, then to the divisor.
        batch_shapes.add(
            tuple(-(-max(s[i] for s in shapes) // divisor) * divisor
                  for i in (0, 1))
        )  # fmt: skip
    keys = dict(before=set(), after=set())
    for height, width in batch_shapes:
        for stage, (channels, large) in enumerate(stages):
            side_h, side_w = height >> (2 + stage), width >> (2 + stage)
            shape = (batch, side_h, side_w, channels)
            for kernel in ((large, small), (small, large), (small, small)):
                weight = torch.empty(0, 1, *kernel)
                kh, kw = reachable_kernel(weight, side_h, side_w).shape[2:]
                # The forward and the input gradient: the sliding window
                # for long kernels, the tap loop otherwise.
                if triton_dwconv.uses_strip_kernel([(kh, kw)]):
                    forward = (
                        'strip_forward',
                        triton_dwconv.strip_scalars(shape, (kh, kw)),
                        triton_dwconv._STRIP_KEY,
                    )
                else:
                    forward = (
                        'forward',
                        triton_dwconv.forward_scalars(shape, [(kh, kw)]),
                        triton_dwconv._FORWARD_KEY,
                    )
                plan = triton_dwconv.plan_weight_grad(
                    shape, kh, kw, [dict(BLOCK_X=32)], 528
                )
                weight_grad = (
                    'weight_grad',
                    triton_dwconv.weight_grad_scalars(shape, kh, kw, plan),
                    triton_dwconv._WEIGHT_GRAD_KEY,
                )
                for name, scalars, new in (forward, weight_grad):
                    # The original code keyed both kernels on the batch,
                    # the map, the channels and the kernel sizes.
                    old = (name == 'weight_grad', *shape, kh, kw)
                    keys['before'].add(old)
                    keys['after'].add((name, tuning_key(scalars, new)))
    return dict(
        before=len(keys['before']),
        after=len(keys['after']),
        batch_shapes=len(batch_shapes),
    )


def test_multi_scale_detection_tunes_per_shape_class():
    """One epoch of the 3x detection config's training shapes (its
    pipeline's random resizes and crops, batches padded to 32): the
    forward and weight-gradient kernels are tuned per size class, a few
    dozen keys, instead of per batch shape. Image sizes: COCO's are not
    here; every image 640 x 480 (the commonest COCO size, the least
    varied case), and long side 640 with short side uniform in 360-640,
    either orientation."""
    pytest.importorskip('mmdet')  # the config's bases

    def commonest(rng):
        return (480, 640)

    def varied(rng):
        short = rng.randint(360, 640)
        return (short, 640) if rng.random() < 0.5 else (640, short)

    # 24 keys per batch shape before (4 stages x 3 kernels x 2 kernel
    # functions), at most 216 after (and 168 reached).
    assert epoch_tuning_keys(commonest) == dict(
        before=8976, after=168, batch_shapes=374
    )
    assert epoch_tuning_keys(varied) == dict(
        before=15000, after=168, batch_shapes=625
    )
