"""Compiling the Triton kernels for sm_90 (H100/H200) without a GPU, with
Triton's code generation and its bundled ptxas (the kernel tests, also
run in subprocesses that import Triton in a chosen mode)."""

import inspect


def compile_for_hopper(kernel, dtype, constexprs, num_warps=4):
    """Compiles ``kernel`` (an undecorated kernel function) for sm_90.

    Pointers and ``CP`` are declared 16-byte aligned/divisible, as Triton
    specialises them for real (aligned) tensors; other integers are
    ``i32``.

    Args:
        kernel (Callable): A kernel function of
            ``slak_mm.ops._triton_dwconv_kernels``.
        dtype (str): Triton's name of the maps' dtype (``'bf16'``,
            ``'fp32'``, ``'fp16'``); weights and partial sums are fp32.
        constexprs (dict): Values of the ``tl.constexpr`` parameters.
        num_warps (int): Warps per program.

    Returns:
        dict: The compiled kernel's ``asm`` (``'ptx'``, ``'cubin'``, ...).
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    params = inspect.signature(kernel).parameters
    signature, aligned = {}, {}
    for index, name in enumerate(params):
        if name in constexprs:
            signature[name] = 'constexpr'
        elif name.endswith('_ptr'):
            is_map = name in ('x_ptr', 'out_ptr', 'grad_ptr')
            signature[name] = f'*{dtype}' if is_map else '*fp32'
            aligned[(index,)] = [['tt.divisibility', 16]]
        else:
            signature[name] = 'i32'
            if name == 'CP':
                aligned[(index,)] = [['tt.divisibility', 16]]
    source = ASTSource(triton.jit(kernel), signature, constexprs, aligned)
    compiled = triton.compile(
        source,
        target=GPUTarget('cuda', 90, 32),
        options=dict(num_warps=num_warps),
    )
    return compiled.asm
