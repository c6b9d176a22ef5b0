"""Pieces shared by the CPU benchmark (:mod:`.benchmark`) and the CUDA
benchmark (:mod:`.cuda_benchmark`): precisions, the SLaK-T stage shapes,
backbone eval/train steps and the JSON report.

Plain torch: the CUDA benchmark runs where only torch and mmengine are
installed.
"""

import contextlib
import json
import os
from typing import Callable, Dict, Iterator, Sequence, Tuple

import torch
import torch.nn as nn

from ..utils.cli import size_batch_pairs

#: Precision name -> autocast dtype (None: fp32, no autocast); the one
#: set of precision names of both benchmarks, in the CUDA one's default
#: order.
PRECISIONS = {'bf16': torch.bfloat16, 'fp32': None}

#: (kernel K, channels C) of the four SLaK-T stages; maps are size / 4 / 2^i.
SLAK_T_STAGES = ((51, 124), (49, 249), (47, 499), (13, 998))


def check_precision(precision: str) -> None:
    """Raises ValueError unless ``precision`` is a key of
    :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(
            f'precision must be one of {tuple(PRECISIONS)}, got {precision!r}'
        )


def precision_context(precision: str, device: torch.device):
    """``torch.autocast`` on ``device`` for ``'bf16'``; nothing for
    ``'fp32'``."""
    check_precision(precision)
    cast = PRECISIONS[precision]
    if cast is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=cast)


def synchronize(device: torch.device) -> None:
    """Waits for queued CUDA work; nothing on CPU."""
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def backbone_steps(
    model: nn.Module,
    images: torch.Tensor,
    precision: str = 'fp32',
    lr: float = 1e-4,
) -> Dict[str, Callable[[], None]]:
    """Eval and train steps of a backbone returning pooled features.

    ``eval``: one forward in eval mode under ``torch.no_grad``; ``train``:
    a full step in train mode (zero grads, forward, backward of the sum of
    the outputs' means, AdamW). Forward and loss run under
    :func:`precision_context`; parameters, gradients and AdamW stay fp32.

    Args:
        model (nn.Module): Returns a tensor or a tuple of ``(N, C)``
            tensors.
        images (Tensor): ``(N, 3, H, W)``.
        precision (str): A key of :data:`PRECISIONS`.
        lr (float): AdamW learning rate.
    """
    check_precision(precision)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)

    def forward():
        with precision_context(precision, images.device):
            outs = model(images)
        return outs if isinstance(outs, (tuple, list)) else (outs,)

    def eval_step():
        model.eval()
        with torch.no_grad():
            forward()

    def train_step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = sum(out.float().mean() for out in forward())
        loss.backward()
        optimizer.step()

    return dict(eval=eval_step, train=train_step)


def stage_inputs(
    sizes: Sequence[int],
    batches: Sequence[int],
    device: torch.device,
    stages: Sequence[Tuple[int, int]] = SLAK_T_STAGES,
) -> Iterator[Tuple[dict, torch.Tensor]]:
    """The feature map each SLaK-T stage sees, for every input size.

    Yields:
        tuple[dict, Tensor]: Where the map is (``size``, ``batch``,
        ``stage``, ``map`` = its side ``size // 4 // 2**stage``,
        ``channels``, ``kernel``: the start of a result entry) and the
        seeded ``(batch, channels, map, map)`` NCHW map.
    """
    for size, batch in size_batch_pairs(sizes, batches):
        for stage, (kernel, channels) in enumerate(stages):
            side = size // 4 // 2**stage
            torch.manual_seed(0)
            x = torch.randn(batch, channels, side, side, device=device)
            where = dict(
                size=size,
                batch=batch,
                stage=stage,
                map=side,
                channels=channels,
                kernel=kernel,
            )
            yield where, x


def markdown_row(cells: Sequence[str]) -> str:
    """``| a | b | c |``."""
    return '| ' + ' | '.join(cells) + ' |'


def save_report(report: dict, path: str) -> None:
    """Writes the report as JSON, creating the folder if needed."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, 'w') as file:
        json.dump(report, file, indent=2)
