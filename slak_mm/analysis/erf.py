"""Effective receptive field (ERF) as analysed in RepLKNet and SLaK.

For each image the gradient of the central pixel of a feature map (summed
over channels after a ReLU) with respect to the input is taken; its positive
part, summed over the batch and input channels, is the image's contribution
map. Maps are averaged over images. For display and the area ratios the
mean map is normalised as ``log10(erf + 1) / max``.

The high-contribution area ratio at threshold t is the area of the smallest
centred square, with odd side ``2i + 1`` for ``i = 1, 2, ...``, whose summed
normalised contribution exceeds ``t`` times the total, divided by the input
area, as in the released ``erf/analyze_erf.py`` (which divides by its fixed
1024x1024 input).
"""

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from typing import (
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
)

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils.modules import resolve_module

#: The thresholds the paper reports.
ERF_THRESHOLDS = (0.2, 0.3, 0.5, 0.99)

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def layer_output_fn(
    model: nn.Module, layer: str, runner: Optional[FeatureFn] = None
) -> FeatureFn:
    """Returns ``images -> output of the module at 'layer'``.

    Args:
        model (nn.Module): The whole model (or backbone).
        layer (str): Dotted path of the module whose output is the feature
            map, e.g. ``'backbone.stages.-1'`` (the last stage, before the
            output norm, as the released ERF scripts take it).
        runner (callable, optional): What to run to reach the layer; by
            default ``model.backbone`` when the path starts with
            ``backbone.``, else ``model``.
    """
    target = resolve_module(model, layer, 'layer')
    if runner is None:
        if layer.startswith('backbone.') and hasattr(model, 'backbone'):
            runner = model.backbone
        else:
            runner = model

    def features(images: torch.Tensor) -> torch.Tensor:
        captured: List[torch.Tensor] = []
        handle = target.register_forward_hook(
            lambda module, args, output: captured.append(output)
        )
        try:
            runner(images)
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f'{layer} was not called by the forward')
        output = captured[-1]
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            raise ValueError(
                f'{layer} must output an (N, C, h, w) tensor, got '
                f'{getattr(output, "shape", type(output))}'
            )
        return output

    return features


def contribution_map(
    feature_fn: FeatureFn, images: torch.Tensor
) -> np.ndarray:
    """Positive input gradient of the central output pixel.

    Args:
        feature_fn (callable): ``(N, C, H, W) -> (N, C', h, w)``.
        images (Tensor): Preprocessed images ``(N, C, H, W)``.

    Returns:
        np.ndarray: ``(H, W)``, summed over the batch and channels.
    """
    images = images.detach().clone().requires_grad_(True)
    features = feature_fn(images)
    h, w = features.shape[2:]
    central = F.relu(features[:, :, h // 2, w // 2]).sum()
    (grad,) = torch.autograd.grad(central, images)
    return F.relu(grad).sum((0, 1)).double().cpu().numpy()


def accumulate_erf(
    feature_fn: FeatureFn, batches: Iterable[torch.Tensor]
) -> Tuple[np.ndarray, int, int]:
    """Averages :func:`contribution_map` over batches of one image each.

    Images whose map is NaN are skipped, as in the released script.

    Returns:
        tuple[np.ndarray, int, int]: Mean map ``(H, W)``, images used,
        images skipped.
    """
    total, used, skipped = None, 0, 0
    for images in batches:
        scores = contribution_map(feature_fn, images)
        if np.isnan(scores.sum()):
            skipped += 1
            continue
        total = scores if total is None else total + scores
        used += 1
    if total is None:
        raise RuntimeError('no image gave a finite contribution map')
    return total / used, used, skipped


def normalize_erf(erf: np.ndarray) -> np.ndarray:
    """``log10(erf + 1)`` rescaled to a maximum of 1."""
    scaled = np.log10(erf + 1)
    peak = scaled.max()
    if not peak > 0:
        raise ValueError(
            'the ERF is zero everywhere: the feature does not depend on '
            'the input (or every gradient was negative)'
        )
    return scaled / peak


def high_contribution_area(
    normalized: np.ndarray, threshold: float
) -> Optional[Tuple[int, float]]:
    """Smallest centred square holding more than ``threshold`` of the sum.

    Args:
        normalized (np.ndarray): ``(H, W)`` from :func:`normalize_erf`.
        threshold (float): Fraction of the total contribution.

    Returns:
        tuple[int, float] | None: Side length and its area over ``H * W``;
        None if even the largest square tried (side ``2 * (min(H, W) // 2)
        - 1``) does not exceed the threshold, as in the released script.
    """
    h, w = normalized.shape
    total = normalized.sum()
    for i in range(1, min(h, w) // 2):
        square = normalized[
            h // 2 - i : h // 2 + i + 1, w // 2 - i : w // 2 + i + 1
        ]
        if square.sum() / total > threshold:
            side = 2 * i + 1
            return side, side * side / (h * w)
    return None


def area_ratios(
    erf: np.ndarray, thresholds: Sequence[float] = ERF_THRESHOLDS
) -> Dict[float, Optional[Tuple[int, float]]]:
    """:func:`high_contribution_area` of the normalised ERF per threshold."""
    normalized = normalize_erf(erf)
    return {t: high_contribution_area(normalized, t) for t in thresholds}


def save_heatmap(
    erf: np.ndarray, filename: str, title: Optional[str] = None
) -> None:
    """Writes the normalised ERF as a heatmap PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    normalized = normalize_erf(erf)
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    image = ax.imshow(normalized, cmap='coolwarm', vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    directory = os.path.dirname(os.path.abspath(filename))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(filename, bbox_inches='tight')
    plt.close(fig)


IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp')


def list_images(folder: str, limit: Optional[int] = None) -> List[str]:
    """Sorted image files under ``folder`` (recursively)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'image folder {folder} does not exist')
    files = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not files:
        raise FileNotFoundError(f'no images ({IMAGE_EXTENSIONS}) in {folder}')
    return files[:limit] if limit else files


def load_image(
    filename: str,
    size: Tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Reads an RGB image, resizes it (bicubic) and normalises it.

    Args:
        size (tuple[int, int]): ``(H, W)``.
        mean, std (Sequence[float]): Per-channel, on the 0-255 scale (as in
            OpenMMLab data preprocessors).

    Returns:
        Tensor: ``(1, 3, H, W)``.
    """
    from PIL import Image

    with Image.open(filename) as image:
        image = image.convert('RGB').resize((size[1], size[0]), Image.BICUBIC)
        array = np.asarray(image, dtype=np.float32)
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return ((tensor - mean_t) / std_t).unsqueeze(0)


# ImageNet statistics on the 0-255 scale, used when the config has none.
DEFAULT_MEAN = (123.675, 116.28, 103.53)
DEFAULT_STD = (58.395, 57.12, 57.375)


@dataclass
class ErfResult:
    """The ERF of one layer of a model, as ``analyze_erf`` reports it.

    Attributes:
        erf (np.ndarray): ``(H, W)`` mean positive input gradient (before
            normalisation).
        ratios (dict): :func:`area_ratios` per threshold.
        layer (str): The module whose output was taken.
        input_size (tuple[int, int]): ``(H, W)``.
        num_images (int): Images averaged.
        skipped (int): Images skipped for a NaN map.
    """

    erf: np.ndarray
    ratios: Dict[float, Optional[Tuple[int, float]]]
    layer: str
    input_size: Tuple[int, int]
    num_images: int
    skipped: int

    def summary(self) -> str:
        """The printed report: what was averaged and the area ratios."""
        height, width = self.input_size
        lines = [
            f'ERF of {self.layer} over {self.num_images} images '
            f'({self.skipped} skipped, NaN) at {height}x{width}',
            'threshold  side  area ratio',
        ]
        for threshold, found in self.ratios.items():
            if found is None:
                lines.append(
                    f'{threshold:<9}  none (exceeds the largest square)'
                )
            else:
                lines.append(f'{threshold:<9}  {found[0]:<4}  {found[1]:.4f}')
        return '\n'.join(lines)

    def save(self, out_dir: str, title: Optional[str] = None) -> None:
        """Writes ``erf.npy``, ``erf_heatmap.png`` and ``erf_ratios.json``."""
        os.makedirs(out_dir, exist_ok=True)
        np.save(os.path.join(out_dir, 'erf.npy'), self.erf)
        save_heatmap(self.erf, os.path.join(out_dir, 'erf_heatmap.png'), title)
        ratios = {
            str(t): None if r is None else dict(side=r[0], ratio=r[1])
            for t, r in self.ratios.items()
        }
        with open(os.path.join(out_dir, 'erf_ratios.json'), 'w') as f:
            json.dump(
                dict(
                    layer=self.layer,
                    input_size=list(self.input_size),
                    num_images=self.num_images,
                    ratios=ratios,
                ),
                f,
                indent=2,
            )


@contextlib.contextmanager
def quiet_current_logger(level: int = logging.WARNING) -> Iterator[None]:
    """Raises mmengine's current logger to ``level`` for the block."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def config_normalization(cfg) -> Tuple[Sequence[float], Sequence[float]]:
    """Mean and std of the config's data preprocessor (0-255 scale), else
    the ImageNet ones."""
    preprocessor = cfg.model.get('data_preprocessor') or {}
    return (
        preprocessor.get('mean', DEFAULT_MEAN),
        preprocessor.get('std', DEFAULT_STD),
    )


def analyze_config_erf(
    config: str,
    image_dir: str,
    checkpoint: Optional[str] = None,
    num_images: int = 50,
    input_size: Tuple[int, int] = (1024, 1024),
    layer: str = 'backbone.stages.-1',
    seed: int = 0,
    cfg_options: Optional[dict] = None,
) -> ErfResult:
    """The ERF of ``layer`` of the model of ``config`` over images.

    Args:
        config (str): An OpenMMLab 2.x config.
        image_dir (str): Folder of images (recursive); the first
            ``num_images`` in sorted order are used.
        checkpoint (str, optional): Weights; without, the model is
            initialised randomly with ``seed``.
        num_images (int): How many images to average.
        input_size (tuple[int, int]): ``(H, W)`` the images are resized to.
        layer (str): Dotted path of the module whose output is the feature
            map (see :func:`layer_output_fn`).
        seed (int): Seed of the random initialisation.
        cfg_options (dict, optional): Config overrides.
    """
    # mmengine and the toolkits only here: the rest of this module is
    # plain torch and numpy.
    from ..models.builder import build_model_from_config
    from ..utils.checkpoint import load_checkpoint_strict

    model, cfg = build_model_from_config(config, cfg_options)
    if checkpoint:
        load_checkpoint_strict(model, checkpoint)
    else:
        print('No --checkpoint: using randomly initialised weights')
        torch.manual_seed(seed)
        # mmengine logs every parameter's initialisation at INFO level
        # (hundreds of lines); only warnings matter here.
        with quiet_current_logger():
            model.init_weights()
    model.eval()
    mean, std = config_normalization(cfg)
    files = list_images(image_dir, num_images)
    features = layer_output_fn(model, layer)
    erf, used, skipped = accumulate_erf(
        features, (load_image(f, input_size, mean, std) for f in files)
    )
    return ErfResult(
        erf=erf,
        ratios=area_ratios(erf),
        layer=layer,
        input_size=tuple(input_size),
        num_images=used,
        skipped=skipped,
    )
