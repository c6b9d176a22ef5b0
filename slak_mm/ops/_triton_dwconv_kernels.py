"""Triton kernels of the "same"-padded depthwise convolution, channels-last.

Imported only where Triton is installed (see :mod:`.triton_dwconv`). The
functions are left undecorated: :mod:`.triton_dwconv` wraps them with
``triton.jit`` (compiled for CUDA tensors, or Triton's interpreter for CPU
tensors) and, when compiled, with ``triton.autotune``.

Layouts (all contiguous, channels last): the maps read tap by tap come
zero-padded, ``(N, H + 2 PH, W + 2 PW, CP)``: ``PH``, ``PW`` rows and
columns of zeros around the map (the "same" padding, so no tap needs a
bounds check) and the channels padded with zeros to ``CP``, a multiple of
64 (so no channel block needs a mask, and rows of a block start on
128-bit boundaries whatever C is: SLaK's widths 124, 249, 499, 998 are not
multiples of 8, and unaligned channel rows would load one element at a
time). Kernels are ``(kh, kw, CP)``, so one tap of a block of channels is
one aligned load. Outputs are ``(N, H, W, C)``. Every product is
accumulated in fp32, whatever the input dtype. A tile's positions past
the map's edge are the only masked loads, with a mask fixed for the
whole tap loop.

Only public Triton builtins are used (``program_id``, ``arange``,
``full``, masked ``load``/``store``, ``join``, ``permute``, ``reshape``,
``split``, ``minimum``,
``range`` and ``static_range`` loops), so that the kernels compile with
Triton 3.6 as well as with the newest releases. None of the
``@triton.jit`` helpers of ``triton.language.standard`` (``cdiv``,
``zeros``, ``sum``, or the combine functions that ``tl.reduce`` needs) is
called: those are compiled or interpreted as decided when Triton was
first imported, so a kernel calling one fails to compile when Triton was
first imported with ``TRITON_INTERPRET=1``, and to interpret in the
opposite order. The weight gradient's sum over positions is therefore a
halving tree of ``reshape``/``split`` and additions.
"""

import triton.language as tl

# Tiles have at most 2**10 positions (the halving tree's levels).
_MAX_LOG2_POSITIONS = tl.constexpr(10)


def dwconv_forward_kernel(
    x_ptr,
    w1_ptr,
    w2_ptr,
    bias_ptr,
    out_ptr,
    N,
    H,
    W,
    C,
    CP,
    PH,
    PW,
    KH1,
    KW1,
    KH2,
    KW2,
    TUNE_H,
    TUNE_W,
    HAS_SECOND: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """``out = conv(x, w1) [+ conv(x, w2)] [+ bias]``, "same" padding.

    ``x`` is padded by ``PH >= KH // 2`` rows and ``PW >= KW // 2``
    columns (the larger kernel's halves when there are two). One program
    computes a ``BLOCK_H x BLOCK_W`` tile of output positions of one image
    for ``BLOCK_C`` channels: for every tap it loads the shifted input
    tile (neighbouring taps hit the cache) and the tap's weights, and
    accumulates in fp32 registers. The second kernel (the other folded
    strip in eval) reuses the same input tile, so both strips and the bias
    cost one pass over the output.

    ``TUNE_H`` and ``TUNE_W`` (the map's size class, see
    :func:`.triton_dwconv.size_class`) are not used here: they are
    arguments only so that the autotuner can key on them.

    Grid: ``(N * cdiv(H, BLOCK_H) * cdiv(W, BLOCK_W), cdiv(C, BLOCK_C))``.
    """
    pid_tile = tl.program_id(0)
    pid_c = tl.program_id(1)
    tiles_h = (H + BLOCK_H - 1) // BLOCK_H
    tiles_w = (W + BLOCK_W - 1) // BLOCK_W
    tiles_per_image = tiles_h * tiles_w
    n = pid_tile // tiles_per_image
    tile = pid_tile % tiles_per_image
    offs_p = tl.arange(0, BLOCK_H * BLOCK_W)
    oh = (tile // tiles_w) * BLOCK_H + offs_p // BLOCK_W
    ow = (tile % tiles_w) * BLOCK_W + offs_p % BLOCK_W
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    inside = (oh < H) & (ow < W)
    # The same mask for every tap: positions of the tile inside the map
    # (constant along channels, so loads stay vectorised). Channel blocks
    # never pass CP (the caller makes CP a multiple of BLOCK_C).
    load_mask = inside[:, None]
    HP = H + 2 * PH
    WP = W + 2 * PW
    # Pointers of the tile's centre taps in the padded map: a tap adds one
    # scalar offset.
    centre = ((oh + PH) * WP + (ow + PW))[:, None] * CP + offs_c[None, :]
    x_tile = x_ptr + n.to(tl.int64) * HP * WP * CP + centre
    acc = tl.full((BLOCK_H * BLOCK_W, BLOCK_C), 0.0, tl.float32)
    for a in range(0, KH1):
        x_row = x_tile + (a - KH1 // 2) * WP * CP
        w_row = w1_ptr + a * KW1 * CP + offs_c
        for b in range(0, KW1):
            xv = tl.load(
                x_row + (b - KW1 // 2) * CP, mask=load_mask, other=0.0
            )
            wv = tl.load(w_row + b * CP)
            acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
    if HAS_SECOND:
        for a in range(0, KH2):
            x_row = x_tile + (a - KH2 // 2) * WP * CP
            w_row = w2_ptr + a * KW2 * CP + offs_c
            for b in range(0, KW2):
                xv = tl.load(
                    x_row + (b - KW2 // 2) * CP, mask=load_mask, other=0.0
                )
                wv = tl.load(w_row + b * CP)
                acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_c).to(tl.float32)[None, :]
    out_offsets = (oh * W + ow)[:, None] * C + offs_c[None, :]
    tl.store(
        out_ptr + n.to(tl.int64) * H * W * C + out_offsets,
        acc.to(out_ptr.dtype.element_ty),
        mask=inside[:, None] & (offs_c < C)[None, :],
    )


def dwconv_strip_forward_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    out_ptr,
    prior_ptr,
    N,
    H,
    W,
    C,
    CP,
    PH,
    PW,
    KH,
    KW,
    TUNE_H,
    TUNE_W,
    ALONG_W: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ACCUMULATE: tl.constexpr,
    BLOCK_X: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """``out = [prior +] conv(x, w) [+ bias]`` for a kernel long along one
    axis.

    A sliding window along the kernel's long axis (H, or W when
    ``ALONG_W``): one program computes 8 consecutive outputs along it, for
    ``BLOCK_X`` positions across it and ``BLOCK_C`` channels, in 8 named
    accumulators. For every tap across (``b``) it walks the ``K + 7``
    input lines of its window: each line is loaded and widened to fp32
    once and added into all 8 outputs, with the taps ``t, t - 1, ...,
    t - 7`` held in 8 registers that shift by one per line (one weight
    load per line). Taps outside ``[0, K)`` at the window's ends are zero
    (about ``7 / (K + 7)`` of the multiply-adds). Layouts as in
    :func:`dwconv_forward_kernel` (``x`` padded by ``PH``, ``PW``).

    With ``ACCUMULATE``, ``prior`` ``(N, H, W, CP)`` fp32 (the other
    strip's sum in the eval pair pass, kept in fp32 so that the pair's
    sum is rounded once) is added to the 8 accumulators in the epilogue,
    one line just before its store: the tap loop is the same as without
    it. ``out`` and ``prior`` are distinct buffers, so that rerunning the
    kernel on them (as autotuning does) gives the same output.

    Grid: ``(N * cdiv(L_along, 8) * cdiv(L_across, BLOCK_X), cdiv(C,
    BLOCK_C))``, tiles numbered along-major.
    """
    pid_tile = tl.program_id(0)
    pid_c = tl.program_id(1)
    WP = W + 2 * PW
    # Strides (elements) of the padded map, the weights and the output
    # along and across the long axis, and the extents.
    if ALONG_W:
        length, across = W, H
        x_along, x_across = CP, WP * CP
        w_along, w_across = CP, KW * CP
        out_along, out_across = C, W * C
        taps, taps_across = KW, KH
        padded_length = W + 2 * PW
        first_along = PW - KW // 2
        first_across = PH - KH // 2
    else:
        length, across = H, W
        x_along, x_across = WP * CP, CP
        w_along, w_across = KW * CP, CP
        out_along, out_across = W * C, C
        taps, taps_across = KH, KW
        padded_length = H + 2 * PH
        first_along = PH - KH // 2
        first_across = PW - KW // 2
    tiles_along = (length + 7) // 8
    tiles_across = (across + BLOCK_X - 1) // BLOCK_X
    tiles_per_image = tiles_along * tiles_across
    n = pid_tile // tiles_per_image
    tile = pid_tile % tiles_per_image
    start = (tile // tiles_across) * 8
    offs_x = (tile % tiles_across) * BLOCK_X + tl.arange(0, BLOCK_X)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    inside = (offs_x < across)[:, None]
    # Line t of the window (padded position start + first_along + t along)
    # at across-tap b, for the tile's positions across.
    x_lines = (
        x_ptr
        + n.to(tl.int64) * (H + 2 * PH) * WP * CP
        + (start + first_along) * x_along
        + ((offs_x + first_across) * x_across)[:, None]
        + offs_c[None, :]
    )
    zeros = tl.full((BLOCK_X, BLOCK_C), 0.0, tl.float32)
    acc0, acc1, acc2, acc3 = zeros, zeros, zeros, zeros
    acc4, acc5, acc6, acc7 = zeros, zeros, zeros, zeros
    for b in range(0, taps_across):
        x_line = x_lines + b * x_across
        w_line = w_ptr + b * w_across + offs_c
        # w0 holds tap t, w1 tap t - 1, ... w7 tap t - 7 (zero outside).
        no_tap = tl.full((BLOCK_C,), 0.0, tl.float32)
        w0, w1, w2, w3 = no_tap, no_tap, no_tap, no_tap
        w4, w5, w6, w7 = no_tap, no_tap, no_tap, no_tap
        for t in range(0, taps + 7):
            xv = tl.load(
                x_line + t * x_along,
                mask=inside & (start + first_along + t < padded_length),
                other=0.0,
            ).to(tl.float32)
            w7, w6, w5, w4 = w6, w5, w4, w3
            w3, w2, w1 = w2, w1, w0
            w0 = tl.load(
                w_line + t * w_along,
                mask=(offs_c < CP) & (t < taps),
                other=0.0,
            ).to(tl.float32)
            acc0 += xv * w0[None, :]
            acc1 += xv * w1[None, :]
            acc2 += xv * w2[None, :]
            acc3 += xv * w3[None, :]
            acc4 += xv * w4[None, :]
            acc5 += xv * w5[None, :]
            acc6 += xv * w6[None, :]
            acc7 += xv * w7[None, :]
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_c).to(tl.float32)[None, :]
        acc0, acc1, acc2, acc3 = (
            acc0 + bias,
            acc1 + bias,
            acc2 + bias,
            acc3 + bias,
        )
        acc4, acc5, acc6, acc7 = (
            acc4 + bias,
            acc5 + bias,
            acc6 + bias,
            acc7 + bias,
        )
    out = (
        out_ptr
        + n.to(tl.int64) * H * W * C
        + start * out_along
        + (offs_x * out_across)[:, None]
        + offs_c[None, :]
    )
    mask = inside & (offs_c < C)[None, :]
    dtype = out_ptr.dtype.element_ty
    if ACCUMULATE:
        # The prior sum is channel-padded, (N, H, W, CP): its rows are
        # aligned (vector loads) and every channel block lies inside it.
        # Each of its lines is loaded just before the output line it adds
        # to is stored, so that one line at a time is held.
        if ALONG_W:
            prior_along, prior_across = CP, W * CP
        else:
            prior_along, prior_across = W * CP, CP
        prior = (
            prior_ptr
            + n.to(tl.int64) * H * W * CP
            + start * prior_along
            + (offs_x * prior_across)[:, None]
            + offs_c[None, :]
        )
        acc0 += tl.load(prior, mask=inside & (start < length), other=0.0)
    tl.store(out, acc0.to(dtype), mask=mask & (start < length))
    if ACCUMULATE:
        acc1 += tl.load(
            prior + prior_along, mask=inside & (start + 1 < length), other=0.0
        )
    tl.store(out + out_along, acc1.to(dtype), mask=mask & (start + 1 < length))
    if ACCUMULATE:
        acc2 += tl.load(
            prior + 2 * prior_along,
            mask=inside & (start + 2 < length),
            other=0.0,
        )
    tl.store(
        out + 2 * out_along, acc2.to(dtype), mask=mask & (start + 2 < length)
    )
    if ACCUMULATE:
        acc3 += tl.load(
            prior + 3 * prior_along,
            mask=inside & (start + 3 < length),
            other=0.0,
        )
    tl.store(
        out + 3 * out_along, acc3.to(dtype), mask=mask & (start + 3 < length)
    )
    if ACCUMULATE:
        acc4 += tl.load(
            prior + 4 * prior_along,
            mask=inside & (start + 4 < length),
            other=0.0,
        )
    tl.store(
        out + 4 * out_along, acc4.to(dtype), mask=mask & (start + 4 < length)
    )
    if ACCUMULATE:
        acc5 += tl.load(
            prior + 5 * prior_along,
            mask=inside & (start + 5 < length),
            other=0.0,
        )
    tl.store(
        out + 5 * out_along, acc5.to(dtype), mask=mask & (start + 5 < length)
    )
    if ACCUMULATE:
        acc6 += tl.load(
            prior + 6 * prior_along,
            mask=inside & (start + 6 < length),
            other=0.0,
        )
    tl.store(
        out + 6 * out_along, acc6.to(dtype), mask=mask & (start + 6 < length)
    )
    if ACCUMULATE:
        acc7 += tl.load(
            prior + 7 * prior_along,
            mask=inside & (start + 7 < length),
            other=0.0,
        )
    tl.store(
        out + 7 * out_along, acc7.to(dtype), mask=mask & (start + 7 < length)
    )


def dwconv_weight_grad_kernel(
    x_ptr,
    grad_ptr,
    partial_ptr,
    N,
    H,
    W,
    CP,
    KH,
    KW,
    COLUMN_PROGRAMS,
    IMAGES_PER_SPLIT,
    TUNE_H,
    TUNE_W,
    ALONG_W: tl.constexpr,
    BLOCK_X: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Partial weight gradients of a "same" depthwise conv.

    ``x`` is padded by ``KH // 2`` rows and ``KW // 2`` columns, ``(N, H +
    2 (KH // 2), W + 2 (KW // 2), CP)``; ``grad`` (the output gradient)
    only along channels, ``(N, H, W, CP)``. The "long" axis is W when
    ``ALONG_W``, else H; a line is the map along the other axis.

    One program sums the products of 8 consecutive taps ``t0 .. t0 + 7``
    along the long axis and one tap ``b`` across, for ``BLOCK_C``
    channels, over columns of ``BLOCK_X`` positions across and a run of
    images: it walks each column line by line along the long axis,
    loading one gradient line and one input line per step (each widened
    to fp32 once) into 8 fp32 accumulators, one per tap. The input lines
    ``l + t0 .. l + t0 + 7`` that gradient line ``l`` meets are held in 8
    registers; the walk is unrolled by 8 so that their shift is a
    renaming. Taps past the kernel's end are computed and dropped (up to
    7 per block).

    The columns (``cdiv(across, BLOCK_X)``) are dealt to
    ``COLUMN_PROGRAMS`` programs per run of ``IMAGES_PER_SPLIT`` images:
    split ``s`` takes run ``s // COLUMN_PROGRAMS`` and columns ``s %
    COLUMN_PROGRAMS``, ``s % COLUMN_PROGRAMS + COLUMN_PROGRAMS``, ... and
    writes ``partial[s, a * KW + b', c] = sum grad[n, h, w, c] * x[n, h +
    a, w + b', c]`` (padded coordinates) for its taps; the caller sums over
    ``s``. Every launched program writes all its taps once (zeros when it
    has no column), whatever ``BLOCK_X``: the rows written are fixed by
    the grid, so rerunning the kernel with another tiling on the same
    buffer (as autotuning does) leaves no stale rows. ``TUNE_H`` and
    ``TUNE_W`` only key the autotuner, as in :func:`dwconv_forward_kernel`.

    Grid: ``(splits * cdiv(K_along, 8) * K_across, cdiv(C, BLOCK_C))``,
    the tap across fastest, then the tap block (programs reading the same
    lines run together); ``BLOCK_C`` divides ``CP``. ``partial`` is fp32,
    ``(splits, KH * KW, CP)``.
    """
    pid = tl.program_id(0)
    pid_c = tl.program_id(1)
    WP = W + 2 * (KW // 2)
    HP = H + 2 * (KH // 2)
    # Strides (elements) of the padded input, the gradient and a partial
    # row's taps along and across the long axis, and the extents.
    if ALONG_W:
        length, across = W, H
        last_line = WP - 1
        x_along, x_across = CP, WP * CP
        g_along, g_across = CP, W * CP
        taps, taps_across = KW, KH
        p_along, p_across = CP, KW * CP
    else:
        length, across = H, W
        last_line = HP - 1
        x_along, x_across = WP * CP, CP
        g_along, g_across = W * CP, CP
        taps, taps_across = KH, KW
        p_along, p_across = KW * CP, CP
    tap_blocks = (taps + 7) // 8
    b = pid % taps_across
    t0 = ((pid // taps_across) % tap_blocks) * 8
    split = pid // (taps_across * tap_blocks)
    first_column = split % COLUMN_PROGRAMS
    first_image = (split // COLUMN_PROGRAMS) * IMAGES_PER_SPLIT
    last_image = tl.minimum(first_image + IMAGES_PER_SPLIT, N)
    columns = (across + BLOCK_X - 1) // BLOCK_X
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    # Image strides in int64 (the loop's image index is a plain int under
    # the interpreter).
    g_image = (H * W * CP).to(tl.int64)
    x_image = (HP * WP * CP).to(tl.int64)
    zeros = tl.full((BLOCK_X, BLOCK_C), 0.0, tl.float32)
    acc0, acc1, acc2, acc3 = zeros, zeros, zeros, zeros
    acc4, acc5, acc6, acc7 = zeros, zeros, zeros, zeros
    for column in range(first_column, columns, COLUMN_PROGRAMS):
        offs_x = column * BLOCK_X + tl.arange(0, BLOCK_X)
        # Positions past the map's edge: the one mask of the input loads,
        # fixed for the column.
        inside = (offs_x < across)[:, None]
        g_column = grad_ptr + (offs_x * g_across)[:, None] + offs_c[None, :]
        # Output position l across reads padded position l + b across.
        x_column = x_ptr + ((offs_x + b) * x_across)[:, None] + offs_c[None, :]
        for n in range(first_image, last_image):
            g_lines = g_column + n * g_image
            x_lines = x_column + n * x_image
            # Input lines past the padded map only meet dropped taps or
            # masked gradient lines: clamped, not masked.
            x0 = tl.load(
                x_lines + tl.minimum(t0, last_line) * x_along, mask=inside
            ).to(tl.float32)
            x1 = tl.load(
                x_lines + tl.minimum(t0 + 1, last_line) * x_along, mask=inside
            ).to(tl.float32)
            x2 = tl.load(
                x_lines + tl.minimum(t0 + 2, last_line) * x_along, mask=inside
            ).to(tl.float32)
            x3 = tl.load(
                x_lines + tl.minimum(t0 + 3, last_line) * x_along, mask=inside
            ).to(tl.float32)
            x4 = tl.load(
                x_lines + tl.minimum(t0 + 4, last_line) * x_along, mask=inside
            ).to(tl.float32)
            x5 = tl.load(
                x_lines + tl.minimum(t0 + 5, last_line) * x_along, mask=inside
            ).to(tl.float32)
            x6 = tl.load(
                x_lines + tl.minimum(t0 + 6, last_line) * x_along, mask=inside
            ).to(tl.float32)
            for start in range(0, length, 8):
                for step in tl.static_range(8):
                    line = start + step
                    # x0 .. x6 hold input lines line + t0 .. line + t0 + 6.
                    x7 = tl.load(
                        x_lines
                        + tl.minimum(line + t0 + 7, last_line) * x_along,
                        mask=inside,
                    ).to(tl.float32)
                    g = tl.load(
                        g_lines + line * g_along,
                        mask=inside & (line < length),
                        other=0.0,
                    ).to(tl.float32)
                    acc0 += g * x0
                    acc1 += g * x1
                    acc2 += g * x2
                    acc3 += g * x3
                    acc4 += g * x4
                    acc5 += g * x5
                    acc6 += g * x6
                    acc7 += g * x7
                    # Unrolled: a renaming, no moves.
                    x0, x1, x2, x3 = x1, x2, x3, x4
                    x4, x5, x6 = x5, x6, x7
    # The sum over positions of the 8 taps at once. Joined in bit-reversed
    # order, so that the last axis, flattened, is the tap.
    taps8 = tl.join(
        tl.join(tl.join(acc0, acc4), tl.join(acc2, acc6)),
        tl.join(tl.join(acc1, acc5), tl.join(acc3, acc7)),
    )
    total = tl.permute(tl.reshape(taps8, (BLOCK_X, BLOCK_C * 8)), (1, 0))
    # By halving: BLOCK_X is a power of two, and the levels unroll at
    # compile time.
    for level in tl.static_range(_MAX_LOG2_POSITIONS):
        if BLOCK_X >> level > 1:
            halves = tl.reshape(
                total, (BLOCK_C * 8, BLOCK_X >> (level + 1), 2)
            )
            left, right = tl.split(halves)
            total = left + right
    total = tl.reshape(total, (BLOCK_C, 8))
    tap = t0 + tl.arange(0, 8)
    partial = (
        partial_ptr
        + split.to(tl.int64) * KH * KW * CP
        + b * p_across
        + offs_c[:, None]
        + (tap * p_along)[None, :]
    )
    tl.store(partial, total, mask=(tap < taps)[None, :])
