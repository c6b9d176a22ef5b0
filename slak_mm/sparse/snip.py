"""SNIP scores ``|w * dL/dw|`` of one batch, as SLaK's release computes them.

Plain torch. :func:`snip_scores` works on any model and loss;
:func:`sample_batch` and :func:`snip_loss` give the release's batch and
loss for a model with mmengine's ``BaseModel`` interface (a
``data_preprocessor``, ``_run_forward`` and ``parse_losses``), without
importing mmengine.
"""

import contextlib
import copy
import random
from collections import OrderedDict
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .masking import resolve_module


@contextlib.contextmanager
def _keep_host_rngs():
    """Restores Python's and numpy's global RNGs (data pipelines use them)."""
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def snip_scores(
    model: nn.Module,
    compute_loss: Callable[[nn.Module], torch.Tensor],
    names: Sequence[str],
    module_path: Optional[str] = None,
) -> Dict[str, torch.Tensor]:
    """``|w * dL/dw|`` of one loss, on a scratch copy of the model.

    The model's BN statistics and parameters and the global RNGs (torch,
    CUDA, Python, numpy) are left as they were; ``compute_loss`` may draw
    its batch at random.

    Args:
        model (nn.Module): The whole model.
        compute_loss (callable): ``compute_loss(scratch_model)`` returns a
            scalar loss of the copy in train mode.
        names (Sequence[str]): Parameters to score, relative to
            ``module_path``.
        module_path (str, optional): Submodule the names refer to.

    Returns:
        dict[str, Tensor]: Scores shaped like the parameters (zero where a
        parameter got no gradient).
    """
    devices = (
        [torch.cuda.current_device()] if torch.cuda.is_available() else []
    )
    with torch.random.fork_rng(devices=devices), _keep_host_rngs():
        scratch = copy.deepcopy(model)
        scratch.train()
        scratch.zero_grad(set_to_none=True)
        compute_loss(scratch).backward()
    scratch_params = dict(
        resolve_module(scratch, module_path, 'module_path').named_parameters()
    )
    scores = OrderedDict()
    for name in names:
        param = scratch_params[name]
        grad = (
            param.grad if param.grad is not None else torch.zeros_like(param)
        )
        scores[name] = (param.detach() * grad).abs()
    return scores


def sample_batch(dataloader) -> dict:
    """One batch drawn from the loader's dataset and collated like the loader.

    Not ``next(iter(dataloader))``: a second iterator shares the loader's
    sampler, and closing it closes an ``InfiniteSampler``'s index generator,
    which then ends the training loop.

    Args:
        dataloader (torch.utils.data.DataLoader): The training loader.

    Returns:
        dict: ``min(batch_size, len(dataset))`` random samples, collated.
    """
    dataset = dataloader.dataset
    batch_size = min(dataloader.batch_size or 1, len(dataset))
    indices = torch.randperm(len(dataset))[:batch_size].tolist()
    return dataloader.collate_fn([dataset[i] for i in indices])


def hard_labels(data) -> Optional[torch.Tensor]:
    """Class indices of a classification batch, one per sample, or None.

    Args:
        data (dict): The data preprocessor's output.

    Returns:
        Tensor | None: ``(N,)`` int64 labels when every data sample holds a
        single ``gt_label``; None for other tasks (segmentation, detection,
        multi-label).
    """
    samples = data.get('data_samples') if isinstance(data, dict) else None
    if not samples:
        return None
    labels = []
    for sample in samples:
        label = getattr(sample, 'gt_label', None)
        if not torch.is_tensor(label) or label.numel() != 1:
            return None
        labels.append(label.reshape(1))
    return torch.cat(labels).long()


def snip_loss(scratch: nn.Module, batch: dict, owner: str) -> torch.Tensor:
    """The loss SNIP scores, as released: no batch augmentations (Mixup /
    CutMix), and plain cross-entropy on the hard labels for classifiers
    (other models use their own loss).

    Args:
        scratch (nn.Module): A scratch copy of an mmengine ``BaseModel``;
            its ``batch_augments`` are switched off.
        batch (dict): A raw batch (see :func:`sample_batch`).
        owner (str): Who asks, for the error message.

    Returns:
        Tensor: The scalar loss.

    Raises:
        RuntimeError: If a classifier's ``forward(mode='tensor')`` gives
            no ``(N, num_classes)`` logits.
    """
    preprocessor = scratch.data_preprocessor
    if getattr(preprocessor, 'batch_augments', None) is not None:
        preprocessor.batch_augments = None  # the copy only
    data = preprocessor(batch, True)
    labels = hard_labels(data)
    if labels is None:
        losses = scratch._run_forward(data, mode='loss')
        loss, _ = scratch.parse_losses(losses)
        return loss
    logits = scratch._run_forward(data, mode='tensor')
    if (
        not torch.is_tensor(logits)
        or logits.dim() != 2
        or logits.shape[0] != labels.numel()
    ):
        raise RuntimeError(
            f'{owner}: SNIP scores classifiers with cross-entropy '
            f"on the logits of forward(mode='tensor'), which must be "
            f'an (N, num_classes) tensor for {labels.numel()} samples; '
            f'got {getattr(logits, "shape", type(logits).__name__)}'
        )
    return F.cross_entropy(logits.float(), labels.to(logits.device))
