"""Writers of small, learnable datasets in the real on-disk layouts.

Each ``generate_*`` function writes one layout under ``root`` and returns a
summary whose ``train_dataset`` / ``val_dataset`` entries are the dataset
arguments a config needs (everything but the pipeline):

* ``generate_ade20k``: ``<root>/ADEChallengeData2016/images/{training,
  validation}/ADE_*.jpg`` and ``annotations/...`` PNGs for mmseg's
  ``ADE20KDataset``.
* ``generate_coco_instances``: ``<root>/coco/{train2017,val2017}/*.jpg`` and
  ``annotations/instances_{train,val}2017.json`` for mmdet's ``CocoDataset``.
* ``generate_imagenet``: ``<root>/imagenet/{train,val}/<class>/*.JPEG``,
  ``meta/{train,val}.txt`` and ``meta/classes.txt`` for mmpretrain's
  ``ImageNet``.
* ``generate_ade20k_context``: the ADE20K layout again, with scenes whose
  labels need long-range context (:mod:`slak_mm.datasets.context`).

Output depends only on the arguments: every image draws from its own random
generator seeded by ``(seed, layout, split, index)``, and no file holds a
time stamp or an absolute path, so the same seed gives byte-identical files.
Every layout directory also gets ``synthetic.json`` recording how it was
made; ``overwrite=True`` only ever deletes a directory that has one.
"""

import inspect
import json
import shutil
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .class_names import ADE20K_CLASSES, COCO_CATEGORY_IDS, COCO_CLASSES
from .context import check_context_size, sample_context_scene
from .shapes import (
    MAX_CLASSES,
    SceneObject,
    class_appearance,
    render_label_map,
    render_scene,
    sample_scene,
)

# The shape datasets; 'all' writes these three.
LAYOUTS = ('ade20k', 'coco', 'imagenet')
# Segmentation that needs long-range context (ADE20K layout).
CONTEXT_LAYOUT = 'ade20k-context'
KNOWN_LAYOUTS = (*LAYOUTS, CONTEXT_LAYOUT)
# Directory of each layout under the output root.
LAYOUT_DIRS = {
    'ade20k': 'ADEChallengeData2016',
    'coco': 'coco',
    'imagenet': 'imagenet',
    CONTEXT_LAYOUT: 'ADEChallengeData2016',
}
MARKER_FILE = 'synthetic.json'
# Smallest image side: mmdet's COCO train config drops images below 32 px
# (``filter_cfg=dict(min_size=32)``), and shapes need a few pixels.
MIN_IMAGE_SIDE = 32
JPEG_QUALITY = 90

# Separate the random streams of layouts and splits.
_LAYOUT_STREAMS = {layout: i for i, layout in enumerate(KNOWN_LAYOUTS)}
_SPLIT_STREAMS = {'train': 0, 'val': 1}
_ADE20K_SPLIT_DIRS = {'train': 'training', 'val': 'validation'}
# Object radius as a fraction of the shorter side: several per scene image,
# one big one per classification image.
_SCENE_RADIUS = (0.12, 0.3)
_CLASSIFICATION_RADIUS = (0.25, 0.42)
# Most classes per layout: the real class list, or the distinct appearances.
_MAX_CLASSES = {
    'ade20k': len(ADE20K_CLASSES),
    'coco': len(COCO_CLASSES),
    'imagenet': MAX_CLASSES,
    # Markers show their class by colour alone: the first ten palette
    # colours, far from the grey stripes and from each other.
    CONTEXT_LAYOUT: 10,
}

ImageSize = Union[int, Sequence[int]]


def generate_ade20k(
    root: Union[str, Path],
    num_train: int = 32,
    num_val: int = 8,
    image_size: ImageSize = 96,
    num_classes: int = 4,
    max_objects: int = 3,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Writes a semantic-segmentation set in the ADE20K layout.

    Label PNGs are single-channel ``uint8``: 0 is "other" and an object of
    class ``k`` (0-based) is ``k + 1``, i.e. the ``k``-th of
    :data:`ADE20K_CLASSES`. With ``reduce_zero_label=True`` (fixed in
    ``ADE20KDataset``) mmseg turns 0 into 255 (ignored) and ``k + 1`` into
    ``k``.

    Args:
        root (str | Path): Output root; the data goes to
            ``<root>/ADEChallengeData2016``.
        num_train (int): Images in ``training``.
        num_val (int): Images in ``validation``.
        image_size (int | Sequence[int]): Side of square images, or
            ``(width, height)``, at least 32 each.
        num_classes (int): Classes to draw, the first ``num_classes`` of the
            150 ADE20K classes.
        max_objects (int): Most objects per image (at least one each).
        seed (int): Seed of all randomness.
        overwrite (bool): Replace an earlier generated directory.

    Returns:
        dict: Summary, see :func:`generate_datasets`.
    """
    layout = _check_args(
        'ade20k', root, overwrite, num_train, num_val, image_size,
        num_classes, max_objects, seed,
    )  # fmt: skip
    layout.make_directory()

    def draw(rng: np.random.Generator) -> Tuple[Image.Image, np.ndarray]:
        image, objects = _draw_scene(
            rng, layout.width, layout.height, num_classes, max_objects
        )
        values = [o.class_index + 1 for o in objects]
        size = (layout.width, layout.height)
        return image, render_label_map(*size, objects, values)

    return _write_ade20k_layout(layout, draw)


def generate_ade20k_context(
    root: Union[str, Path],
    num_train: int = 32,
    num_val: int = 8,
    image_size: ImageSize = 96,
    num_classes: int = 4,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Writes the ADE20K layout with labels that need long-range context.

    Scenes come from :func:`~slak_mm.datasets.context.sample_context_scene`:
    vertical grey stripes whose class shows only in a coloured marker
    somewhere in the stripe, with every labelled pixel at least
    ``CUE_CLEARANCE + 1`` rows from its stripe's marker. Files, label
    values, arguments and the summary are as for :func:`generate_ade20k`,
    except that ``image_size`` needs a width that is a multiple of 4 and a
    height of at least 48, and ``num_classes`` is at most 10 (one marker
    colour each).
    """
    layout = _check_args(
        CONTEXT_LAYOUT, root, overwrite, num_train, num_val, image_size,
        num_classes, 1, seed,
    )  # fmt: skip
    layout.make_directory()

    def draw(rng: np.random.Generator) -> Tuple[Image.Image, np.ndarray]:
        scene = sample_context_scene(
            rng, layout.width, layout.height, num_classes
        )
        return Image.fromarray(scene.image, 'RGB'), scene.label_map

    return _write_ade20k_layout(layout, draw)


def _write_ade20k_layout(
    layout: '_Layout',
    draw: Callable[[np.random.Generator], Tuple[Image.Image, np.ndarray]],
) -> dict:
    """Writes the images and label PNGs of both splits of an ADE20K-layout
    directory and returns its summary (with mmseg dataset dicts).

    Args:
        layout (_Layout): The prepared directory and its arguments.
        draw (callable): ``draw(rng)`` returns one RGB image and its
            ``(height, width)`` uint8 label map.
    """
    for split, count in layout.splits():
        split_dir = _ADE20K_SPLIT_DIRS[split]
        image_dir = layout.data_root / 'images' / split_dir
        label_dir = layout.data_root / 'annotations' / split_dir
        image_dir.mkdir(parents=True)
        label_dir.mkdir(parents=True)
        for index in range(count):
            image, label_map = draw(layout.image_rng(split, index))
            stem = f'ADE_{split}_{index + 1:08d}'
            image.save(image_dir / f'{stem}.jpg', 'JPEG', quality=JPEG_QUALITY)
            _save_png(label_map, label_dir / f'{stem}.png')

    classes = ADE20K_CLASSES[: layout.num_classes]

    def dataset(split: str) -> dict:
        split_dir = _ADE20K_SPLIT_DIRS[split]
        return dict(
            type='ADE20KDataset',
            data_root=str(layout.data_root),
            data_prefix=dict(
                img_path=f'images/{split_dir}',
                seg_map_path=f'annotations/{split_dir}',
            ),
            metainfo=dict(classes=classes),
        )

    return _finish_layout(layout, classes, dataset)


def generate_coco_instances(
    root: Union[str, Path],
    num_train: int = 32,
    num_val: int = 8,
    image_size: ImageSize = 96,
    num_classes: int = 4,
    max_objects: int = 3,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Writes an instance-segmentation set in the COCO 2017 layout.

    Images go to ``<root>/coco/{train2017,val2017}`` and the annotations
    to ``annotations/instances_{train,val}2017.json``. Each object is one
    non-crowd annotation with a one-polygon ``segmentation`` (the outline
    that was drawn, so pycocotools rasterizes it to the drawn mask), its
    ``bbox`` ``[x, y, w, h]`` and the polygon's ``area``. ``categories``
    lists all 80 COCO classes with their real ids, in id order, as the
    official files do; objects use the first ``num_classes`` of them (at
    most 80). So both a config that keeps mmdet's 80 classes and one that
    sets ``metainfo=dict(classes=<those names>)`` map class ``k`` to label
    ``k``. The arguments are as for :func:`generate_ade20k`; the summary
    adds ``val_evaluator``.
    """
    layout = _check_args(
        'coco', root, overwrite, num_train, num_val, image_size,
        num_classes, max_objects, seed,
    )  # fmt: skip
    layout.make_directory()
    ann_dir = layout.data_root / 'annotations'
    ann_dir.mkdir()
    # Ids are unique across both splits, as in the official files.
    next_ids = (1, 1)
    for split, count in layout.splits():
        next_ids = _write_coco_split(layout, split, count, *next_ids)

    classes = COCO_CLASSES[:num_classes]

    def dataset(split: str) -> dict:
        return dict(
            type='CocoDataset',
            # mmdet's configs end data_root with '/' and append to it.
            data_root=f'{layout.data_root}/',
            ann_file=f'annotations/instances_{split}2017.json',
            data_prefix=dict(img=f'{split}2017/'),
            metainfo=dict(classes=classes),
        )

    val_evaluator = dict(
        type='CocoMetric',
        ann_file=str(ann_dir / 'instances_val2017.json'),
        metric=['bbox', 'segm'],
    )
    return _finish_layout(
        layout, classes, dataset, val_evaluator=val_evaluator
    )


def _write_coco_split(
    layout: '_Layout', split: str, count: int, image_id: int, ann_id: int
) -> Tuple[int, int]:
    """Writes one split's images and annotation file, numbering images
    from ``image_id`` and annotations from ``ann_id``; returns the next
    free ``(image_id, ann_id)``."""
    image_dir = layout.data_root / f'{split}2017'
    image_dir.mkdir()
    images, annotations = [], []
    for index in range(count):
        image, objects = _draw_scene(
            layout.image_rng(split, index), layout.width, layout.height,
            layout.num_classes, layout.max_objects,
        )  # fmt: skip
        file_name = f'{image_id:012d}.jpg'
        image.save(image_dir / file_name, 'JPEG', quality=JPEG_QUALITY)
        images.append(
            dict(
                id=image_id,
                file_name=file_name,
                height=layout.height,
                width=layout.width,
            )
        )
        for obj in objects:
            annotations.append(_coco_annotation(obj, ann_id, image_id))
            ann_id += 1
        image_id += 1
    ann = dict(
        info=dict(
            description='slak_mm synthetic shapes, COCO instances layout',
            version='1.0',
        ),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[
            dict(id=cat_id, name=name, supercategory='synthetic')
            for cat_id, name in zip(COCO_CATEGORY_IDS, COCO_CLASSES)
        ],
    )
    ann_path = layout.data_root / 'annotations' / f'instances_{split}2017.json'
    ann_path.write_text(json.dumps(ann, separators=(',', ':')))
    return image_id, ann_id


def generate_imagenet(
    root: Union[str, Path],
    num_train: int = 32,
    num_val: int = 8,
    image_size: ImageSize = 96,
    num_classes: int = 4,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Writes a classification set in mmpretrain's ImageNet layout.

    Every image shows one large object. Class names are the appearances
    (``'red_disc'``, ...) of the first ``num_classes`` classes, sorted, and a
    class's label is its index in that sorted order; each class has its own
    directory named after it under ``train`` and ``val``, so mmpretrain's
    folder scan (sorted directory names) and the annotation files agree.
    Images go to the classes in turn, so classes are balanced.

    Files: ``<root>/imagenet/{train,val}/<class>/*.JPEG``,
    ``meta/{train,val}.txt`` with ``<class>/<file> <label>`` lines (paths
    relative to the split directory, as ``ImageNet(split=...)`` reads them)
    and ``meta/classes.txt`` with one class name per line, in label order.
    The arguments are as for :func:`generate_ade20k`, except that each
    split needs at least ``num_classes`` images.
    """
    layout = _check_args(
        'imagenet', root, overwrite, num_train, num_val, image_size,
        num_classes, 1, seed,
    )  # fmt: skip
    layout.make_directory()
    # Class index (appearance) of each label, labels in sorted-name order.
    label_to_class = sorted(
        range(num_classes), key=lambda i: class_appearance(i).name
    )
    classes = tuple(class_appearance(i).name for i in label_to_class)
    (layout.data_root / 'meta').mkdir()
    (layout.data_root / 'meta' / 'classes.txt').write_text(
        ''.join(f'{name}\n' for name in classes)
    )
    for split, count in layout.splits():
        _write_imagenet_split(layout, split, count, label_to_class, classes)

    def dataset(split: str) -> dict:
        return dict(
            type='ImageNet',
            data_root=str(layout.data_root),
            split=split,
            metainfo=dict(classes=classes),
        )

    return _finish_layout(layout, classes, dataset)


def _write_imagenet_split(
    layout: '_Layout',
    split: str,
    count: int,
    label_to_class: Sequence[int],
    classes: Sequence[str],
) -> None:
    """Writes one split's class directories, images and ``meta`` list."""
    for name in classes:
        (layout.data_root / split / name).mkdir(parents=True)
    lines = []
    for index in range(count):
        rng = layout.image_rng(split, index)
        label = index % len(classes)
        objects = sample_scene(
            rng, layout.width, layout.height, [label_to_class[label]],
            _CLASSIFICATION_RADIUS,
        )  # fmt: skip
        image = render_scene(rng, layout.width, layout.height, objects)
        if split == 'train':
            file_name = f'{classes[label]}_{index + 1:05d}.JPEG'
        else:
            file_name = f'ILSVRC2012_val_{index + 1:08d}.JPEG'
        relative_path = f'{classes[label]}/{file_name}'
        image.save(
            layout.data_root / split / relative_path,
            'JPEG',
            quality=JPEG_QUALITY,
        )
        lines.append(f'{relative_path} {label}\n')
    (layout.data_root / 'meta' / f'{split}.txt').write_text(''.join(lines))


_GENERATORS = {
    'ade20k': generate_ade20k,
    'coco': generate_coco_instances,
    'imagenet': generate_imagenet,
    CONTEXT_LAYOUT: generate_ade20k_context,
}


def generate_datasets(
    layouts: Union[str, Sequence[str]],
    root: Union[str, Path],
    **kwargs,
) -> Dict[str, dict]:
    """Writes one or more layouts under the same root.

    Args:
        layouts (str | Sequence[str]): Names from :data:`KNOWN_LAYOUTS`,
            or ``'all'`` (the shape layouts :data:`LAYOUTS`). Layouts that
            share a directory (``ade20k`` and ``ade20k-context``) cannot be
            written together.
        root (str | Path): Output root; each layout gets its directory from
            :data:`LAYOUT_DIRS` under it.
        **kwargs: Passed to every generator (``num_train``, ``num_val``,
            ``image_size``, ``num_classes``, ``seed``, ``overwrite``, and
            ``max_objects``, which the imagenet and ade20k-context layouts
            ignore).

    Returns:
        dict[str, dict]: Summary per layout with keys ``layout``,
        ``data_root`` (absolute), ``classes``, ``num_classes``,
        ``num_train``, ``num_val``, ``image_size`` (``(width, height)``),
        ``seed``, ``max_objects``, ``train_dataset`` and ``val_dataset``
        (dataset arguments for a config, without ``pipeline``), and for
        coco ``val_evaluator``.
    """
    names = _resolve_layouts(layouts)
    directories = [LAYOUT_DIRS[name] for name in names]
    for directory in set(directories):
        sharing = [n for n in names if LAYOUT_DIRS[n] == directory]
        if len(sharing) > 1:
            raise ValueError(
                f'layouts {sharing} both write {directory}; write them '
                'under different roots'
            )
    kwargs_per_layout = {}
    # Check every layout's arguments before writing anything.
    for name in names:
        layout_kwargs = dict(kwargs)
        if name in ('imagenet', CONTEXT_LAYOUT):
            layout_kwargs.pop('max_objects', None)
        arguments = inspect.signature(_GENERATORS[name]).bind(
            root, **layout_kwargs
        )
        arguments.apply_defaults()
        _check_args(name, **{'max_objects': 1, **arguments.arguments})
        kwargs_per_layout[name] = layout_kwargs
    return {
        name: _GENERATORS[name](root, **kwargs_per_layout[name])
        for name in names
    }


def _resolve_layouts(layouts: Union[str, Sequence[str]]) -> List[str]:
    """Checks layout names and expands ``'all'``; keeps order, no repeats."""
    if isinstance(layouts, str):
        layouts = [layouts]
    if not layouts:
        raise ValueError(
            f'no layout given; choose from {KNOWN_LAYOUTS} or "all"'
        )
    names: List[str] = []
    for layout in layouts:
        if layout == 'all':
            expanded = list(LAYOUTS)
        elif layout in KNOWN_LAYOUTS:
            expanded = [layout]
        else:
            raise ValueError(
                f'unknown layout {layout!r}; choose from {KNOWN_LAYOUTS} '
                'or "all"'
            )
        names.extend(n for n in expanded if n not in names)
    return names


def _check_args(
    layout: str,
    root: Union[str, Path],
    overwrite: bool,
    num_train: int,
    num_val: int,
    image_size: ImageSize,
    num_classes: int,
    max_objects: int,
    seed: int,
) -> '_Layout':
    """Validates a generator's arguments and that its directory may be
    written (nothing is written yet)."""
    for name, value in (
        ('num_train', num_train),
        ('num_val', num_val),
        ('num_classes', num_classes),
        ('max_objects', max_objects),
    ):
        if not _is_int(value) or value <= 0:
            raise ValueError(
                f'{name} must be a positive integer, got {value!r}'
            )
    if num_classes > _MAX_CLASSES[layout]:
        raise ValueError(
            f'num_classes must be at most {_MAX_CLASSES[layout]} for the '
            f'{layout} layout, got {num_classes}'
        )
    if layout == 'imagenet':
        for name, count in (('num_train', num_train), ('num_val', num_val)):
            if count < num_classes:
                raise ValueError(
                    f'{name} ({count}) must be at least num_classes '
                    f'({num_classes}) for the imagenet layout: every class '
                    'directory needs an image'
                )
    if not _is_int(seed) or seed < 0:
        raise ValueError(f'seed must be a non-negative integer, got {seed!r}')
    sides = [image_size] * 2 if _is_int(image_size) else list(image_size)
    if len(sides) != 2 or not all(_is_int(side) for side in sides):
        raise ValueError(
            'image_size must be an integer or (width, height), '
            f'got {image_size!r}'
        )
    if min(sides) < MIN_IMAGE_SIDE:
        raise ValueError(
            f'image_size sides must be at least {MIN_IMAGE_SIDE} pixels '
            f'(mmdet drops smaller COCO images), got {image_size!r}'
        )
    if layout == CONTEXT_LAYOUT:
        check_context_size(int(sides[0]), int(sides[1]))
    data_root = _check_layout_dir(root, layout, overwrite)
    return _Layout(
        layout, data_root, num_train, num_val, int(sides[0]), int(sides[1]),
        num_classes, max_objects, seed,
    )  # fmt: skip


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_layout_dir(
    root: Union[str, Path], layout: str, overwrite: bool
) -> Path:
    """Returns the layout directory after checking it may be written."""
    data_root = Path(root).resolve() / LAYOUT_DIRS[layout]
    if data_root.exists() and any(data_root.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f'{data_root} exists and is not empty; pass overwrite=True '
                '(--overwrite) to replace it'
            )
        if not (data_root / MARKER_FILE).is_file():
            raise FileExistsError(
                f'{data_root} has no {MARKER_FILE}, so this generator did '
                'not write it; refusing to delete it'
            )
    return data_root


def _draw_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    num_classes: int,
    max_objects: int,
) -> Tuple[Image.Image, List[SceneObject]]:
    """Samples and renders a scene of 1..max_objects random-class objects."""
    num_objects = int(rng.integers(1, max_objects + 1))
    class_indices = [int(c) for c in rng.integers(0, num_classes, num_objects)]
    objects = sample_scene(rng, width, height, class_indices, _SCENE_RADIUS)
    return render_scene(rng, width, height, objects), objects


def _save_png(label_map: np.ndarray, path: Path) -> None:
    Image.fromarray(label_map, 'L').save(path, 'PNG')


def _coco_annotation(obj: SceneObject, ann_id: int, image_id: int) -> dict:
    """A COCO annotation whose polygon is the drawn outline."""
    xs = [x for x, _ in obj.polygon]
    ys = [y for _, y in obj.polygon]
    x_min, y_min = min(xs), min(ys)
    bbox = [
        x_min,
        y_min,
        round(max(xs) - x_min, 2),
        round(max(ys) - y_min, 2),
    ]
    # Shoelace formula; COCO's polygon areas are this up to rasterization.
    area = 0.5 * abs(
        sum(
            x0 * y1 - x1 * y0
            for (x0, y0), (x1, y1) in zip(
                obj.polygon, obj.polygon[1:] + obj.polygon[:1]
            )
        )
    )
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=COCO_CATEGORY_IDS[obj.class_index],
        segmentation=[[float(v) for point in obj.polygon for v in point]],
        area=round(area, 2),
        bbox=[float(v) for v in bbox],
        iscrowd=0,
    )


class _Layout(NamedTuple):
    """One layout to write: its directory and checked generator arguments."""

    name: str
    data_root: Path
    num_train: int
    num_val: int
    width: int
    height: int
    num_classes: int
    max_objects: int
    seed: int

    def splits(self) -> Tuple[Tuple[str, int], ...]:
        """``(split, number of images)`` of both splits."""
        return (('train', self.num_train), ('val', self.num_val))

    def image_rng(self, split: str, index: int) -> np.random.Generator:
        """An independent stream per image: counts never change other
        images."""
        streams = (_LAYOUT_STREAMS[self.name], _SPLIT_STREAMS[split])
        return np.random.default_rng([self.seed, *streams, index])

    def make_directory(self) -> None:
        """Creates the empty directory, replacing a generated one."""
        if self.data_root.exists():
            # Stale files would be picked up by directory scans.
            shutil.rmtree(self.data_root)
        self.data_root.mkdir(parents=True)


def _finish_layout(
    layout: _Layout,
    classes: Sequence[str],
    dataset: Callable[[str], dict],
    **extra,
) -> dict:
    """The summary of a written layout (see :func:`generate_datasets`),
    also recorded in its marker file.

    Args:
        layout (_Layout): The written directory and its arguments.
        classes (Sequence[str]): Class names in label order.
        dataset (callable): ``dataset(split)`` returns the config's dataset
            arguments for ``'train'`` or ``'val'``.
        **extra: More summary entries (e.g. ``val_evaluator``).
    """
    summary = dict(
        layout=layout.name,
        data_root=str(layout.data_root),
        classes=tuple(classes),
        num_classes=len(classes),
        num_train=layout.num_train,
        num_val=layout.num_val,
        image_size=(layout.width, layout.height),
        seed=layout.seed,
        max_objects=layout.max_objects,
        train_dataset=dataset('train'),
        val_dataset=dataset('val'),
        **extra,
    )
    _write_marker(layout.data_root, summary)
    return summary


def _write_marker(data_root: Path, summary: dict) -> None:
    """Records how the data was made (no paths, so seeds stay comparable)."""
    record = {
        key: summary[key]
        for key in (
            'layout',
            'classes',
            'num_classes',
            'num_train',
            'num_val',
            'image_size',
            'seed',
            'max_objects',
        )
    }
    record['generator'] = 'slak_mm.datasets'
    (data_root / MARKER_FILE).write_text(json.dumps(record, indent=2) + '\n')
