"""Coloured shapes and the scenes the synthetic datasets are drawn from.

Every class has one appearance, a (colour, shape) pair, so a small model can
tell classes apart from what it sees. The first ``len(PALETTE)`` classes all
differ in colour (and mostly in shape); later ones reuse a colour with another
shape. Objects are simple polygons that never overlap, so one polygon is the
exact outline of what is drawn: the same vertices fill the image, the label
map and the COCO ``segmentation``.
"""

import math
from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

# Well-separated colours (RGB), none of them grey so that they stand out from
# the grey backgrounds.
PALETTE: Dict[str, Tuple[int, int, int]] = {
    'red': (230, 25, 75),
    'green': (60, 180, 75),
    'yellow': (255, 225, 25),
    'blue': (0, 130, 200),
    'orange': (245, 130, 48),
    'purple': (145, 30, 180),
    'cyan': (70, 240, 240),
    'magenta': (240, 50, 230),
    'lime': (210, 245, 60),
    'pink': (250, 190, 212),
    'teal': (0, 128, 128),
    'lavender': (220, 190, 255),
    'brown': (170, 110, 40),
    'beige': (255, 250, 200),
    'maroon': (128, 0, 0),
    'mint': (170, 255, 195),
    'olive': (128, 128, 0),
    'apricot': (255, 215, 180),
    'navy': (0, 0, 128),
    'white': (255, 255, 255),
}

SHAPES = (
    'disc',
    'square',
    'triangle',
    'cross',
    'star',
    'hexagon',
    'ellipse',
    'bar',
)

# How many distinct (colour, shape) appearances exist: the most classes any
# generator can draw.
MAX_CLASSES = len(PALETTE) * len(SHAPES)

# Per-channel colour jitter of an object: small against the palette spacing.
_COLOUR_JITTER = 10
# Background grey levels and pixel noise.
_BACKGROUND_GREY = (50, 150)
_NOISE_STD = 5.0
# Objects never come closer than this many pixels.
_OBJECT_GAP = 2.0
# Placement attempts per extra object before it is left out.
_PLACEMENT_TRIES = 50


class Appearance(NamedTuple):
    """What every object of one class looks like.

    Attributes:
        colour (str): Key of :data:`PALETTE`.
        shape (str): One of :data:`SHAPES`.
    """

    colour: str
    shape: str

    @property
    def name(self) -> str:
        """str: ``'<colour>_<shape>'``, e.g. ``'red_disc'``."""
        return f'{self.colour}_{self.shape}'

    @property
    def rgb(self) -> Tuple[int, int, int]:
        """tuple[int, int, int]: The colour before jitter."""
        return PALETTE[self.colour]


class SceneObject(NamedTuple):
    """One object of a scene.

    Attributes:
        class_index (int): Index of the object's class among the classes the
            scene was drawn with (0-based).
        polygon (list[tuple[float, float]]): Outline in pixel coordinates
            ``(x, y)``, rounded to 2 decimals.
        rgb (tuple[int, int, int]): Fill colour after jitter.
    """

    class_index: int
    polygon: List[Tuple[float, float]]
    rgb: Tuple[int, int, int]


def class_appearance(class_index: int) -> Appearance:
    """Returns the appearance of a class.

    Appearances are enumerated diagonally over (colour, shape), so consecutive
    classes differ in colour first and every pair occurs once.

    Args:
        class_index (int): 0-based class index, below :data:`MAX_CLASSES`.

    Returns:
        Appearance: The class's colour and shape.
    """
    if not 0 <= class_index < MAX_CLASSES:
        raise ValueError(
            f'class_index must be in [0, {MAX_CLASSES}), got {class_index}'
        )
    colours = list(PALETTE)
    shift, colour_index = divmod(class_index, len(colours))
    shape_index = (colour_index + shift) % len(SHAPES)
    return Appearance(colours[colour_index], SHAPES[shape_index])


def shape_polygon(
    shape: str, centre: Tuple[float, float], radius: float, angle: float
) -> List[Tuple[float, float]]:
    """Returns the outline of a shape that fits in a circle of ``radius``.

    Args:
        shape (str): One of :data:`SHAPES`.
        centre (tuple[float, float]): ``(x, y)`` of the centre in pixels.
        radius (float): Radius of the enclosing circle in pixels.
        angle (float): Rotation in radians.

    Returns:
        list[tuple[float, float]]: At least 3 vertices ``(x, y)``, rounded to
        2 decimals, in drawing order.
    """
    if shape == 'disc':
        outline = _regular_polygon(24, 1.0)
    elif shape == 'square':
        # Corners on the circle, edges axis-aligned before rotation.
        outline = _regular_polygon(4, 1.0, phase=math.pi / 4)
    elif shape == 'triangle':
        outline = _regular_polygon(3, 1.0, phase=-math.pi / 2)
    elif shape == 'hexagon':
        outline = _regular_polygon(6, 1.0)
    elif shape == 'star':
        outer = _regular_polygon(5, 1.0, phase=-math.pi / 2)
        inner = _regular_polygon(5, 0.45, phase=-math.pi / 2 + math.pi / 5)
        outline = [p for pair in zip(outer, inner) for p in pair]
    elif shape == 'cross':
        arm = 0.35  # half the width of an arm, as a fraction of the radius
        reach = math.sqrt(1.0 - arm**2)  # arm ends touch the circle
        outline = [
            (arm, -reach), (arm, -arm), (reach, -arm), (reach, arm),
            (arm, arm), (arm, reach), (-arm, reach), (-arm, arm),
            (-reach, arm), (-reach, -arm), (-arm, -arm), (-arm, -reach),
        ]  # fmt: skip
    elif shape == 'ellipse':
        outline = [(x, 0.5 * y) for x, y in _regular_polygon(24, 1.0)]
    elif shape == 'bar':
        # An upright rectangle whose corners touch the circle.
        half_width, half_height = 0.4, math.sqrt(1.0 - 0.4**2)
        outline = [
            (-half_width, -half_height),
            (half_width, -half_height),
            (half_width, half_height),
            (-half_width, half_height),
        ]
    else:
        raise ValueError(f'unknown shape {shape!r}; choose from {SHAPES}')
    cos, sin = math.cos(angle), math.sin(angle)
    centre_x, centre_y = centre
    return [
        (
            round(centre_x + radius * (x * cos - y * sin), 2),
            round(centre_y + radius * (x * sin + y * cos), 2),
        )
        for x, y in outline
    ]


def _regular_polygon(
    num_vertices: int, scale: float, phase: float = 0.0
) -> List[Tuple[float, float]]:
    """Vertices of a regular polygon on a circle of radius ``scale``."""
    step = 2 * math.pi / num_vertices
    return [
        (
            scale * math.cos(phase + i * step),
            scale * math.sin(phase + i * step),
        )
        for i in range(num_vertices)
    ]


def sample_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    class_indices: Sequence[int],
    radius_range: Tuple[float, float],
) -> List[SceneObject]:
    """Places non-overlapping objects of the given classes in an image.

    The first object always fits; a later one that finds no free place in
    :data:`_PLACEMENT_TRIES` attempts is left out.

    Args:
        rng (numpy.random.Generator): Source of all randomness.
        width (int): Image width in pixels.
        height (int): Image height in pixels.
        class_indices (Sequence[int]): Class of each object to place.
        radius_range (tuple[float, float]): Range of the enclosing-circle
            radius as a fraction of the shorter image side.

    Returns:
        list[SceneObject]: The placed objects, in drawing order.
    """
    short_side = min(width, height)
    placed: List[Tuple[float, float, float]] = []  # (x, y, radius)
    objects = []
    for class_index in class_indices:
        appearance = class_appearance(class_index)
        for _ in range(_PLACEMENT_TRIES):
            radius = short_side * rng.uniform(*radius_range)
            # Keep the whole shape one pixel inside the image.
            centre_x = rng.uniform(radius + 1, width - radius - 1)
            centre_y = rng.uniform(radius + 1, height - radius - 1)
            if all(
                math.hypot(centre_x - x, centre_y - y)
                >= radius + r + _OBJECT_GAP
                for x, y, r in placed
            ):
                break
        else:
            continue
        placed.append((centre_x, centre_y, radius))
        # A little rotation keeps squares square-looking (not diamonds).
        angle = rng.uniform(-math.pi / 12, math.pi / 12)
        polygon = shape_polygon(
            appearance.shape, (centre_x, centre_y), radius, angle
        )
        jitter = rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, size=3)
        rgb = tuple(
            int(c) for c in np.clip(np.add(appearance.rgb, jitter), 0, 255)
        )
        objects.append(SceneObject(class_index, polygon, rgb))
    return objects


def render_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    objects: Sequence[SceneObject],
) -> Image.Image:
    """Draws objects over a noisy grey gradient.

    Args:
        rng (numpy.random.Generator): Source of the background and noise.
        width (int): Image width in pixels.
        height (int): Image height in pixels.
        objects (Sequence[SceneObject]): What to draw, in order.

    Returns:
        PIL.Image.Image: An RGB image of size ``(width, height)``.
    """
    start_grey, end_grey = rng.uniform(*_BACKGROUND_GREY, size=2)
    direction = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    # Position along a random direction, scaled to [0, 1].
    along = xs * math.cos(direction) + ys * math.sin(direction)
    along = (along - along.min()) / max(np.ptp(along), 1e-6)
    grey = start_grey + (end_grey - start_grey) * along
    canvas = Image.fromarray(
        np.repeat(grey[..., None], 3, axis=2).round().astype(np.uint8), 'RGB'
    )
    draw = ImageDraw.Draw(canvas)
    for obj in objects:
        draw.polygon(obj.polygon, fill=obj.rgb)
    noise = rng.normal(0.0, _NOISE_STD, size=(height, width, 3))
    pixels = np.asarray(canvas, dtype=np.float64) + noise
    return Image.fromarray(pixels.clip(0, 255).round().astype(np.uint8), 'RGB')


def render_label_map(
    width: int,
    height: int,
    objects: Sequence[SceneObject],
    label_values: Sequence[int],
    background: int = 0,
) -> np.ndarray:
    """Rasterizes objects into a single-channel label map.

    Uses the same rasterizer and vertices as :func:`render_scene`, so label
    and image agree pixel for pixel.

    Args:
        width (int): Map width in pixels.
        height (int): Map height in pixels.
        objects (Sequence[SceneObject]): What to draw.
        label_values (Sequence[int]): Pixel value of each object, in
            ``objects`` order (0..255).
        background (int): Value of the pixels no object covers.

    Returns:
        numpy.ndarray: ``uint8`` array of shape ``(height, width)``.
    """
    label_map = Image.new('L', (width, height), background)
    draw = ImageDraw.Draw(label_map)
    for obj, value in zip(objects, label_values):
        draw.polygon(obj.polygon, fill=int(value))
    return np.asarray(label_map, dtype=np.uint8)
