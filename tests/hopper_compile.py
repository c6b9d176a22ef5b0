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


def _nvidia_tool(name):
    """Path of a CUDA tool bundled with Triton (``nvdisasm``, ``ptxas``)."""
    from triton import knobs

    return getattr(knobs.nvidia, name).path


def inner_loop_mix(cubin):
    """Instructions and FFMAs of the innermost loop that holds FFMAs.

    The sm_90 SASS (``nvdisasm``) is split at its labels; a loop is a
    branch back to an earlier label, its body the instructions from the
    label to the branch (included). Of the loops holding FFMAs, the
    shortest is the inner loop.

    Args:
        cubin (bytes): A compiled kernel (``asm['cubin']``).

    Returns:
        tuple[int, int]: Instructions and FFMAs of that loop body.
    """
    import re
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(suffix='.cubin') as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run(
            [_nvidia_tool('nvdisasm'), '-c', f.name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    labels, instructions = {}, []
    for line in sass.splitlines():
        label = re.match(r'^\s*(\.L_x_\d+):', line)
        if label:
            labels[label.group(1)] = len(instructions)
            continue
        instruction = re.search(r'/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;', line)
        if instruction:
            instructions.append(instruction.group(1))
    loops = []
    for end, text in enumerate(instructions):
        branch = re.search(r'BRA\s+`?\((\.L_x_\d+)\)', text)
        if branch and labels.get(branch.group(1), end + 1) <= end:
            body = instructions[labels[branch.group(1)] : end + 1]
            ffmas = sum(
                1 for op in body if re.match(r'(@!?U?P\w+\s+)?FFMA\b', op)
            )
            if ffmas:
                loops.append((len(body), ffmas))
    return min(loops)


def ptxas_usage(ptx):
    """Registers per thread and spilled bytes of a PTX kernel for sm_90,
    from the bundled ``ptxas -v``.

    Returns:
        tuple[int, int]: Registers, and spill stores + loads in bytes.
    """
    import re
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        source = f'{folder}/kernel.ptx'
        with open(source, 'w') as f:
            f.write(ptx)
        report = subprocess.run(
            [_nvidia_tool('ptxas'), '-arch=sm_90a', '-v', source,
             '-o', f'{folder}/kernel.cubin'],
            capture_output=True,
            text=True,
            check=True,
        ).stderr  # fmt: skip
    registers = int(re.search(r'Used (\d+) registers', report).group(1))
    spills = sum(
        int(n)
        for n in re.findall(r'(\d+) bytes spill (?:stores|loads)', report)
    )
    return registers, spills
