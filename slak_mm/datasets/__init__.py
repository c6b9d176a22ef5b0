"""Synthetic datasets in the ADE20K, COCO and ImageNet on-disk layouts.

Plain numpy/PIL/json: importing this needs none of the OpenMMLab toolkits.
``tools/make_synthetic_data.py`` is the command-line front end.
"""

from .class_names import ADE20K_CLASSES, COCO_CATEGORY_IDS, COCO_CLASSES
from .shapes import (
    MAX_CLASSES,
    PALETTE,
    SHAPES,
    Appearance,
    class_appearance,
)
from .writers import (
    LAYOUT_DIRS,
    LAYOUTS,
    MARKER_FILE,
    generate_ade20k,
    generate_coco_instances,
    generate_datasets,
    generate_imagenet,
)

__all__ = [
    'ADE20K_CLASSES',
    'COCO_CATEGORY_IDS',
    'COCO_CLASSES',
    'LAYOUTS',
    'LAYOUT_DIRS',
    'MARKER_FILE',
    'MAX_CLASSES',
    'PALETTE',
    'SHAPES',
    'Appearance',
    'class_appearance',
    'generate_ade20k',
    'generate_coco_instances',
    'generate_datasets',
    'generate_imagenet',
]
