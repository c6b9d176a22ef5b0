"""A hook that warns when segmentation labels fall outside the classes.

mmseg maps annotation values silently: with ``metainfo=dict(classes=...)``
naming a subset of a dataset's classes (e.g. four ADE20K names) every other
class becomes 255 and is ignored; values at or above ``num_classes`` that
are not the ignore index are skipped by the metric and break the loss. This
hook reads annotation files the way ``LoadAnnotations`` does and says which
values are lost and why.
"""

import logging
from collections import Counter
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from PIL import Image


def map_like_load_annotations(
    raw: np.ndarray,
    reduce_zero_label: bool,
    label_map: Optional[Dict[int, int]],
) -> np.ndarray:
    """Applies mmseg's ``LoadAnnotations`` value mapping to a label map.

    Args:
        raw (ndarray): Label values as stored in the file, shape ``(H, W)``.
        reduce_zero_label (bool): 0 becomes 255 and every other value v
            becomes v - 1.
        label_map (dict[int, int], optional): Old label -> new label, as the
            dataset builds it from ``metainfo.classes``.

    Returns:
        ndarray: The training labels, int64, shape ``(H, W)``.
    """
    labels = raw.astype(np.int64)
    if reduce_zero_label:
        labels = np.where(labels == 0, 255, labels - 1)
    if label_map:
        mapped = labels.copy()
        for old, new in label_map.items():
            mapped[labels == old] = new
        labels = mapped
    return labels


def find_label_problems(
    seg_map_paths: Iterable[str],
    num_classes: int,
    ignore_index: int = 255,
    reduce_zero_label: bool = False,
    label_map: Optional[Dict[int, int]] = None,
) -> Tuple[Dict[int, List[str]], Dict[int, List[str]], int]:
    """Finds annotation values that do not reach a class.

    Args:
        seg_map_paths (Iterable[str]): Annotation files (single channel).
        num_classes (int): Classes the model predicts.
        ignore_index (int): The label that is ignored on purpose.
        reduce_zero_label (bool): As the dataset reads the files.
        label_map (dict[int, int], optional): The dataset's label map.

    Returns:
        tuple: ``(dropped, out_of_range, num_files)``. ``dropped`` maps each
        stored value that the label map turns into ``ignore_index`` (a
        class missing from ``metainfo.classes``) to the files holding it;
        ``out_of_range`` maps each label that ends up outside
        ``[0, num_classes)`` and is not ``ignore_index`` to its files.

    Raises:
        ValueError: If an annotation is not a single-channel image.
    """
    dropped: Dict[int, List[str]] = {}
    out_of_range: Dict[int, List[str]] = {}
    num_files = 0
    for path in seg_map_paths:
        with Image.open(path) as image:
            raw = np.asarray(image)
        if raw.ndim != 2:
            raise ValueError(
                f'{path}: a label map must have one channel, got shape '
                f'{raw.shape}'
            )
        num_files += 1
        stored = np.unique(raw).astype(np.int64)
        before_map = map_like_load_annotations(stored, reduce_zero_label, None)
        after_map = map_like_load_annotations(
            stored, reduce_zero_label, label_map
        )
        for value, label, final in zip(stored, before_map, after_map):
            value, label, final = int(value), int(label), int(final)
            if final == ignore_index and label != ignore_index:
                dropped.setdefault(value, []).append(path)
            elif final != ignore_index and not 0 <= final < num_classes:
                out_of_range.setdefault(final, []).append(path)
    return dropped, out_of_range, num_files


def _evenly_spaced(count: int, limit: Optional[int]) -> List[int]:
    if limit is None or count <= limit:
        return list(range(count))
    return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)})


@HOOKS.register_module()
class SegLabelCheckHook(Hook):
    """Warns when annotation values fall outside the configured classes.

    Before training (train set), the first validation (val set) and testing
    (test set), reads up to ``max_files`` annotation files of the mmseg
    dataset, maps them as ``LoadAnnotations`` does (``reduce_zero_label``,
    the label map built from ``metainfo.classes``), and logs one warning per
    dataset that lists

    - stored values that become the ignore index because
      ``metainfo.classes`` does not name their class (they are silently
      left out of training and of the metrics), and
    - labels outside ``[0, num_classes)`` that are not the ignore index
      (the metric skips them; the loss fails on them),

    and a warning when the dataset's class count differs from the decode
    head's ``num_classes``.

    Args:
        max_files (int, optional): Most annotation files read per dataset,
            spread evenly over it; None reads all. Defaults to 200.
        error (bool): Raise instead of warning. Defaults to False.
    """

    priority = 'VERY_LOW'

    def __init__(self, max_files: Optional[int] = 200, error: bool = False):
        if max_files is not None and (
            not isinstance(max_files, int)
            or isinstance(max_files, bool)
            or max_files < 2
        ):
            raise ValueError(
                f'max_files must be None or an int >= 2, got {max_files!r}'
            )
        self.max_files = max_files
        self.error = error
        self._checked = set()

    def before_train(self, runner) -> None:
        self._check(runner, 'train', runner.train_dataloader.dataset)

    def before_val(self, runner) -> None:
        self._check(runner, 'val', runner.val_dataloader.dataset)

    def before_test(self, runner) -> None:
        self._check(runner, 'test', runner.test_dataloader.dataset)

    def _check(self, runner, split: str, dataset) -> None:
        if split in self._checked:
            return
        self._checked.add(split)
        model = (
            runner.model.module
            if is_model_wrapper(runner.model)
            else (runner.model)
        )
        head = getattr(model, 'decode_head', None)
        if head is None or not hasattr(dataset, 'get_data_info'):
            return
        num_classes = head.num_classes
        ignore_index = getattr(head, 'ignore_index', 255)
        messages = []
        classes = dataset.metainfo.get('classes')
        if classes is not None and len(classes) != num_classes:
            messages.append(
                f'the dataset has {len(classes)} classes {tuple(classes)} '
                f'but decode_head.num_classes is {num_classes}'
            )
        infos = [
            dataset.get_data_info(i)
            for i in _evenly_spaced(len(dataset), self.max_files)
        ]
        if not infos or 'seg_map_path' not in infos[0]:
            return
        dropped, out_of_range, num_files = find_label_problems(
            [info['seg_map_path'] for info in infos],
            num_classes,
            ignore_index,
            reduce_zero_label=bool(infos[0].get('reduce_zero_label')),
            label_map=infos[0].get('label_map'),
        )
        if dropped:
            messages.append(
                'stored values '
                + _describe(dropped)
                + ' become the ignore index '
                f'{ignore_index} because metainfo.classes does not name '
                'their class (they are left out of training and metrics); '
                'give the dataset your own classes'
            )
        if out_of_range:
            messages.append(
                'labels '
                + _describe(out_of_range)
                + f' are outside 0..{num_classes - 1} (num_classes '
                f'{num_classes}) and not the ignore index {ignore_index}'
            )
        if not messages:
            return
        message = (
            f'SegLabelCheckHook: {split} annotations ({num_files} of '
            f'{len(dataset)} files read): ' + '; '.join(messages) + '.'
        )
        if self.error:
            raise ValueError(message)
        print_log(message, logger='current', level=logging.WARNING)


def _describe(found: Dict[int, List[str]]) -> str:
    counts = Counter({value: len(files) for value, files in found.items()})
    parts = [
        f'{value} (in {count} files, e.g. {found[value][0]})'
        for value, count in sorted(counts.items())
    ]
    return ', '.join(parts)
