"""Synthetic datasets in the ADE20K, COCO and ImageNet on-disk layouts.

These are writers of data on disk, not OpenMMLab dataset classes: the
toolkits' own ``ADE20KDataset``, ``CocoDataset`` and ``ImageNet`` read what
they write, so the configs need no dataset class of ours. The package keeps
the name because what it produces are data sets.

Plain numpy/PIL/json: importing this needs none of the OpenMMLab toolkits.
``tools/misc/make_synthetic_data.py`` is the command-line front end.
"""

from .class_names import ADE20K_CLASSES, COCO_CATEGORY_IDS, COCO_CLASSES
from .context import (
    CUE_CLEARANCE,
    ContextScene,
    constant_prediction_scores,
    sample_context_scene,
)
from .shapes import (
    MAX_CLASSES,
    PALETTE,
    SHAPES,
    Appearance,
    class_appearance,
)
from .writers import (
    CONTEXT_LAYOUT,
    KNOWN_LAYOUTS,
    LAYOUT_DIRS,
    LAYOUTS,
    MARKER_FILE,
    generate_ade20k,
    generate_ade20k_context,
    generate_coco_instances,
    generate_datasets,
    generate_imagenet,
)

__all__ = [
    'ADE20K_CLASSES',
    'COCO_CATEGORY_IDS',
    'COCO_CLASSES',
    'CONTEXT_LAYOUT',
    'CUE_CLEARANCE',
    'ContextScene',
    'KNOWN_LAYOUTS',
    'LAYOUTS',
    'LAYOUT_DIRS',
    'MARKER_FILE',
    'MAX_CLASSES',
    'PALETTE',
    'SHAPES',
    'Appearance',
    'class_appearance',
    'constant_prediction_scores',
    'generate_ade20k',
    'generate_ade20k_context',
    'generate_coco_instances',
    'generate_datasets',
    'generate_imagenet',
    'sample_context_scene',
]
