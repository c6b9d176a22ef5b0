"""Segmentation scenes whose labels can only be read from far away.

The image is split into vertical stripes, each :data:`CELL` (4) pixels
wide by default, with independent random classes. Every stripe's body is
grey noise (its brightness drawn independently of its class); its class
shows only in a coloured marker, :data:`MARKER_HEIGHT` rows tall at a
random height in the stripe. The rows of the stripe within
:data:`CUE_CLEARANCE` of its marker are labelled "other" (ignored by the
metric); the rest of the stripe carries its class::

    stripe column, top to bottom:
      grey noise, label = class        (if more than 20 rows above)
      grey noise, label 0 (other)      20 rows
      marker: class colour, label 0    12 rows
      grey noise, label 0 (other)      20 rows
      grey noise, label = class        (the rest)

A pixel's neighbourhood therefore says nothing about its class: within
``CUE_CLEARANCE`` pixels of a labelled pixel there is only grey noise drawn
without the class, and markers of other stripes, whose classes are
independent of it. Any predictor whose receptive field is narrower than
``2 * CUE_CLEARANCE + 1`` pixels cannot beat predicting the most frequent
class. A model has to find the marker up or down its own 4-pixel column,
up to the image height away, with the neighbouring columns' markers
around it: a long, thin vertical kernel at the stem's stride does that in
one layer; stacked 7x7 kernels reach that far only in their coarse, deep
stages, where one cell covers several columns.

Stripe edges lie on multiples of :data:`CELL` (the stride of SLaK's stem),
so each stem cell covers one stripe. Plain numpy: no OpenMMLab import.
"""

from typing import List, NamedTuple, Tuple

import numpy as np

from .shapes import class_appearance

#: Stripe edges lie on multiples of this (the stem's stride).
CELL = 4
#: Widths a stripe is drawn with (pixels): one stem cell, so neighbouring
#: cells hold independent classes.
STRIPE_WIDTHS = (4,)
#: Height of the marker band at the top (pixels).
MARKER_HEIGHT = 12
#: Rows between the markers and the first labelled row (labelled "other").
CUE_CLEARANCE = 20
#: First labelled row.
LABEL_TOP = MARKER_HEIGHT + CUE_CLEARANCE
#: Fewest labelled rows an image must keep.
MIN_LABELLED_ROWS = 16
#: Grey levels of the stripe bodies and the noise on every pixel.
_BODY_GREY = (70, 190)
_NOISE_STD = 12.0


class ContextScene(NamedTuple):
    """One generated image with its labels.

    Attributes:
        image (np.ndarray): ``(H, W, 3)`` uint8 RGB.
        label_map (np.ndarray): ``(H, W)`` uint8; 0 is "other", ``k + 1``
            is class ``k``.
        cue_mask (np.ndarray): ``(H, W)`` bool, True on marker pixels (the
            only pixels whose value depends on a class).
        stripes (list[tuple[int, int, int]]): ``(x_start, x_end, class)``
            per stripe, left to right, ``x_end`` exclusive.
    """

    image: np.ndarray
    label_map: np.ndarray
    cue_mask: np.ndarray
    stripes: List[Tuple[int, int, int]]


def check_context_size(width: int, height: int) -> None:
    """Raises ValueError if a context scene cannot be drawn at this size."""
    if width % CELL or width < min(STRIPE_WIDTHS):
        raise ValueError(
            f'context scenes need a width that is a multiple of {CELL} and '
            f'at least {min(STRIPE_WIDTHS)}, got {width}'
        )
    if height < LABEL_TOP + MIN_LABELLED_ROWS:
        raise ValueError(
            f'context scenes need a height of at least '
            f'{LABEL_TOP + MIN_LABELLED_ROWS} ({MARKER_HEIGHT} marker rows, '
            f'{CUE_CLEARANCE} clear rows, {MIN_LABELLED_ROWS} labelled '
            f'rows), got {height}'
        )


def sample_stripes(
    rng: np.random.Generator, width: int, num_classes: int
) -> List[Tuple[int, int, int]]:
    """Splits ``[0, width)`` into stripes with random widths and classes.

    Widths come from :data:`STRIPE_WIDTHS`; a remainder narrower than the
    narrowest width joins the last stripe. Classes are uniform and
    independent of position and width.
    """
    stripes = []
    start = 0
    while start < width:
        stripe_width = int(rng.choice(STRIPE_WIDTHS))
        end = min(start + stripe_width, width)
        if width - end < min(STRIPE_WIDTHS):
            end = width
        stripes.append((start, end, int(rng.integers(0, num_classes))))
        start = end
    return stripes


def sample_context_scene(
    rng: np.random.Generator, width: int, height: int, num_classes: int
) -> ContextScene:
    """Draws one image of marked stripes, see the module docstring.

    Args:
        rng (np.random.Generator): Source of all randomness.
        width (int): Image width, a multiple of :data:`CELL`.
        height (int): Image height, at least ``LABEL_TOP +
            MIN_LABELLED_ROWS``.
        num_classes (int): Classes drawn, the first ``num_classes``
            appearances' colours (see :func:`class_appearance`).

    Returns:
        ContextScene: Image, labels, cue mask and stripes.
    """
    check_context_size(width, height)
    stripes = sample_stripes(rng, width, num_classes)
    image = np.empty((height, width, 3), dtype=np.float64)
    label_map = np.zeros((height, width), dtype=np.uint8)
    cue_mask = np.zeros((height, width), dtype=bool)
    for start, end, class_index in stripes:
        grey = rng.uniform(*_BODY_GREY)
        image[:, start:end] = grey
        label_map[:, start:end] = class_index + 1
        top = CELL * int(rng.integers(0, (height - MARKER_HEIGHT) // CELL + 1))
        image[top : top + MARKER_HEIGHT, start:end] = class_appearance(
            class_index
        ).rgb
        cue_mask[top : top + MARKER_HEIGHT, start:end] = True
        # Nothing of the stripe within CUE_CLEARANCE rows of its marker is
        # labelled.
        label_map[
            max(top - CUE_CLEARANCE, 0) : top + MARKER_HEIGHT + CUE_CLEARANCE,
            start:end,
        ] = 0
    # Grey noise, the same on the three channels, everywhere.
    image += rng.normal(0.0, _NOISE_STD, size=(height, width, 1))
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return ContextScene(image, label_map, cue_mask, stripes)


def constant_prediction_scores(
    label_dir: str, num_classes: int
) -> Tuple[float, float]:
    """mIoU and pixel accuracy (%) of predicting the most frequent class.

    Reads ADE20K-layout label PNGs as mmseg does with ``reduce_zero_label``:
    0 is ignored and ``k`` is class ``k - 1``. The predicted class's IoU is
    its pixel share and every other class present scores 0; the mean runs
    over the classes present, as in mmseg's ``IoUMetric``. Without any
    information about a pixel, no prediction has a higher expected pixel
    accuracy than this one (mIoU can be gamed by spreading guesses over the
    classes, accuracy cannot).

    Args:
        label_dir (str): Folder of label ``.png`` files.
        num_classes (int): Number of classes (label values 1..num_classes).

    Returns:
        tuple[float, float]: ``(mIoU, accuracy)`` in percent.
    """
    from pathlib import Path

    from PIL import Image

    counts = np.zeros(num_classes, dtype=np.int64)
    files = sorted(Path(label_dir).glob('*.png'))
    for path in files:
        labels = np.asarray(Image.open(path)).astype(np.int64)
        labels = labels[(labels > 0) & (labels <= num_classes)] - 1
        counts += np.bincount(labels, minlength=num_classes)
    if counts.sum() == 0:
        raise ValueError(f'no labelled pixels in {label_dir}')
    share = counts.max() / counts.sum()
    present = int((counts > 0).sum())
    return 100.0 * share / present, 100.0 * share
