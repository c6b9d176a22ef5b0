"""Exporting a trained SLaK model in deploy (re-parameterized) form: the
logic of ``tools/model_converters/deploy.py``."""

import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..models.backends import use_backend
from ..models.builder import (
    build_model_from_config,
    flatten_tensors,
    network_output_kind,
    run_network,
)
from ..utils.checkpoint import load_checkpoint_strict

#: Top-level checkpoint entries that are always kept.
KEPT_ENTRIES = ('meta', 'state_dict')


def check_finite(tensors: Dict[str, torch.Tensor], what: str) -> None:
    """Fails on the first tensor holding NaN or infinity.

    Args:
        tensors (dict[str, Tensor]): Named tensors (non-float ones are
            skipped).
        what (str): What they are, for the message (e.g. ``'weight'``).

    Raises:
        ValueError: Naming the tensor and how many entries are NaN / inf.
    """
    for name, tensor in tensors.items():
        if not torch.is_floating_point(tensor):
            continue
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            num_nan = int(torch.isnan(tensor).sum())
            num_inf = int((~finite).sum()) - num_nan
            raise ValueError(
                f'{what} {name!r} (shape {tuple(tensor.shape)}) holds '
                f'{num_nan} NaN and {num_inf} infinite values'
            )


def relative_difference(
    reference: Sequence[torch.Tensor], other: Sequence[torch.Tensor]
) -> Tuple[float, float]:
    """Maximum absolute difference and the same relative to the reference.

    Args:
        reference (list[Tensor]): Outputs of the original model.
        other (list[Tensor]): Outputs of the deployed model, same shapes.

    Returns:
        tuple[float, float]: ``max |a - b|`` and ``max |a - b| / max |a|``
        over all tensors (computed in float64).

    Raises:
        ValueError: If the counts or shapes differ, or an output holds NaN
            or infinity (a NaN difference would otherwise vanish in the
            maximum).
    """
    if len(reference) != len(other):
        raise ValueError(
            f'output count differs: {len(reference)} vs {len(other)}'
        )
    check_finite(
        {f'#{i}': t for i, t in enumerate(reference)}, 'original model output'
    )
    check_finite(
        {f'#{i}': t for i, t in enumerate(other)}, 'deployed model output'
    )
    max_abs = max_ref = 0.0
    for index, (a, b) in enumerate(zip(reference, other)):
        if a.shape != b.shape:
            raise ValueError(
                f'output {index} has shape {tuple(a.shape)} before and '
                f'{tuple(b.shape)} after deploy'
            )
        a, b = a.double(), b.double()
        max_abs = max(max_abs, (a - b).abs().max().item())
        max_ref = max(max_ref, a.abs().max().item())
    return max_abs, max_abs / max(max_ref, 1e-12)


def make_test_batch(
    shape: Sequence[int], batch_size: int = 2, seed: int = 0
) -> torch.Tensor:
    """A reproducible standard-normal batch, like preprocessed images.

    Args:
        shape (Sequence[int]): ``(H, W)`` or ``(C, H, W)``; C defaults to 3.

    Returns:
        Tensor: Shape ``(batch_size, C, H, W)``.
    """
    shape = tuple(shape)
    if len(shape) == 2:
        shape = (3,) + shape
    if len(shape) != 3:
        raise ValueError(f'shape must be (H, W) or (C, H, W), got {shape}')
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch_size,) + shape, generator=generator)


def switch_backbone_to_deploy(model: nn.Module) -> None:
    """Calls ``model.backbone.switch_to_deploy()`` (or the model's own)."""
    target = getattr(model, 'backbone', model)
    if not hasattr(target, 'switch_to_deploy'):
        raise TypeError(
            f'{type(target).__name__} has no switch_to_deploy(); deploy '
            'needs a SLaK backbone'
        )
    target.switch_to_deploy()


def deploy_checkpoint(
    config: str,
    checkpoint: str,
    out: str,
    shape: Sequence[int] = (224, 224),
    batch_size: int = 2,
    tolerance: float = 1e-5,
    keep_extra: bool = False,
    cfg_options: Optional[dict] = None,
) -> Dict[str, object]:
    """Loads a trained model, fuses its backbone, checks and saves it.

    Args:
        config (str): The training config.
        checkpoint (str): A checkpoint of that config (``state_dict``).
        out (str): Where to save the deployed checkpoint.
        shape (Sequence[int]): Test batch image size ``(H, W)``.
        batch_size (int): Test batch size.
        tolerance (float): Largest allowed relative output difference.
        keep_extra (bool): Keep top-level entries other than ``meta`` and
            ``state_dict`` (optimizer, schedulers, message hub, EMA copy,
            sparse-mask state, ...). They refer to the training-form
            parameters, so they are dropped by default.
        cfg_options (dict, optional): Overrides for the config.

    Returns:
        dict: ``max_abs_diff``, ``rel_diff``, ``dropped`` (entry names),
        ``num_params_before``/``num_params_after``, ``compared`` (which
        outputs were compared, see :func:`run_network`).

    Raises:
        RuntimeError: If the deployed outputs differ by more than
            ``tolerance`` (relative); nothing is saved then.
        ValueError: If a checkpoint tensor, a fused tensor or an output
            holds NaN or infinity (names it); nothing is saved then.
    """
    model, _ = build_model_from_config(config, cfg_options)
    loaded = load_checkpoint_strict(model, checkpoint)
    check_finite(model.state_dict(), f'{checkpoint}: tensor')
    model.eval()
    batch = make_test_batch(shape, batch_size)
    # The reference backend runs the training form as defined (three convs
    # and BNs per block); faster backends already fold eval-mode BNs on the
    # fly, which would make the comparison vacuous.
    with use_backend(model, 'reference'):
        before = flatten_tensors(run_network(model, batch))
    if not before:
        raise RuntimeError(f'{config}: the model returned no tensors')
    params_before = sum(p.numel() for p in model.parameters())
    switch_backbone_to_deploy(model)
    check_finite(model.state_dict(), 'deployed tensor')
    after = flatten_tensors(run_network(model, batch))
    max_abs, rel = relative_difference(before, after)
    if not rel <= tolerance:
        raise RuntimeError(
            f'deployed outputs differ from the original: max abs '
            f'{max_abs:.3e}, relative {rel:.3e} > {tolerance:.1e}; '
            'not saved'
        )
    meta = copy.deepcopy(loaded.get('meta') or {})
    meta['slak_deploy'] = dict(
        source=checkpoint,
        test_shape=list(shape),
        max_abs_diff=max_abs,
        rel_diff=rel,
    )
    result = dict(meta=meta, state_dict=model.state_dict())
    extra: List[str] = [k for k in loaded if k not in KEPT_ENTRIES]
    if keep_extra:
        for key in extra:
            result[key] = loaded[key]
    torch.save(result, out)
    return dict(
        max_abs_diff=max_abs,
        rel_diff=rel,
        dropped=[] if keep_extra else extra,
        kept_extra=extra if keep_extra else [],
        num_params_before=params_before,
        num_params_after=sum(p.numel() for p in model.parameters()),
        compared=network_output_kind(model),
    )
