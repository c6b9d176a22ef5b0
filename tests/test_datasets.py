"""Synthetic datasets: real layouts, loaded by the real toolkit classes."""

import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from PIL import Image

from slak_mm.datasets import (
    ADE20K_CLASSES,
    COCO_CATEGORY_IDS,
    COCO_CLASSES,
    CONTEXT_LAYOUT,
    CUE_CLEARANCE,
    LAYOUT_DIRS,
    MARKER_FILE,
    MAX_CLASSES,
    PALETTE,
    class_appearance,
    constant_prediction_scores,
    generate_ade20k,
    generate_ade20k_context,
    generate_coco_instances,
    generate_datasets,
    generate_imagenet,
    sample_context_scene,
)

from .helpers import REPO
from .tool_utils import load_tool

NUM_CLASSES = 3
SMALL = dict(num_train=4, num_val=3, image_size=64, num_classes=NUM_CLASSES)


def base_config(tmp_path, base):
    """Loads a toolkit's packaged ``_base_`` config (mmengine needs a file)."""
    config_file = tmp_path / f'{base.split("::")[0]}_base.py'
    config_file.write_text(f'_base_ = [{base!r}]\n')
    return Config.fromfile(str(config_file))


def build_dataset(scope, dataset_cfg, pipeline):
    """Builds a dataset through the toolkit's registry in its scope."""
    registry = importlib.import_module(f'{scope}.registry')
    importlib.import_module(f'{scope}.utils').register_all_modules(
        init_default_scope=False
    )
    with DefaultScope.overwrite_default_scope(scope):
        return registry.DATASETS.build(dict(dataset_cfg, pipeline=pipeline))


def read_tree(root):
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob('*'))
        if path.is_file()
    }


@pytest.fixture(scope='module')
def ade20k(tmp_path_factory):
    return generate_ade20k(tmp_path_factory.mktemp('ade'), **SMALL)


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    return generate_coco_instances(tmp_path_factory.mktemp('coco'), **SMALL)


@pytest.fixture(scope='module')
def imagenet(tmp_path_factory):
    return generate_imagenet(
        tmp_path_factory.mktemp('imagenet'),
        num_train=6,
        num_val=3,
        image_size=64,
        num_classes=NUM_CLASSES,
    )


def test_class_tables_match_toolkits():
    from mmdet.datasets import CocoDataset
    from mmseg.datasets import ADE20KDataset

    assert ADE20K_CLASSES == ADE20KDataset.METAINFO['classes']
    assert COCO_CLASSES == CocoDataset.METAINFO['classes']
    coco_ids = dict(zip(COCO_CLASSES, COCO_CATEGORY_IDS))
    # Ids from the official instances_val2017.json, around its gaps.
    assert coco_ids['person'] == 1
    assert coco_ids['stop sign'] == 13
    assert coco_ids['backpack'] == 27
    assert coco_ids['dining table'] == 67
    assert coco_ids['book'] == 84
    assert coco_ids['toothbrush'] == 90


def test_every_class_has_its_own_appearance():
    appearances = [class_appearance(i) for i in range(MAX_CLASSES)]
    assert len(set(appearances)) == MAX_CLASSES >= len(ADE20K_CLASSES)
    # The first classes differ in colour, the easiest cue to learn.
    first = appearances[: len(PALETTE)]
    assert len({a.colour for a in first}) == len(PALETTE)
    with pytest.raises(ValueError, match='class_index'):
        class_appearance(MAX_CLASSES)


def test_ade20k_files_pair_up_with_labels_in_range(ade20k):
    data_root = Path(ade20k['data_root'])
    assert data_root.name == 'ADEChallengeData2016'
    for split, count in (('training', 4), ('validation', 3)):
        images = sorted((data_root / 'images' / split).iterdir())
        labels = sorted((data_root / 'annotations' / split).iterdir())
        assert [p.stem for p in images] == [p.stem for p in labels]
        assert len(images) == count
        assert {p.suffix for p in images} == {'.jpg'}
        for image_path, label_path in zip(images, labels):
            image, label = Image.open(image_path), Image.open(label_path)
            assert (image.format, image.mode, image.size) == (
                'JPEG',
                'RGB',
                (64, 64),
            )
            assert (label.format, label.mode, label.size) == (
                'PNG',
                'L',
                (64, 64),
            )
            values = set(np.unique(np.asarray(label)).tolist())
            assert 0 in values and values - {0}
            assert values <= set(range(NUM_CLASSES + 1))


def test_ade20k_label_values_show_as_their_class_colour(ade20k):
    data_root = Path(ade20k['data_root'])
    pixels = {value: [] for value in range(NUM_CLASSES + 1)}
    for label_path in (data_root / 'annotations' / 'training').iterdir():
        image_path = (
            data_root / 'images' / 'training' / f'{label_path.stem}.jpg'
        )
        label = np.asarray(Image.open(label_path))
        image = np.asarray(Image.open(image_path)).astype(int)
        for value in pixels:
            pixels[value].append(image[label == value])
    for value, chunks in pixels.items():
        colours = np.concatenate(chunks)
        if not len(colours):
            continue
        median = np.median(colours, axis=0)
        if value == 0:  # "other" is grey
            assert np.ptp(median) < 20
        else:
            expected = class_appearance(value - 1).rgb
            assert np.abs(median - expected).max() < 25, (value, median)


@pytest.mark.parametrize('with_metainfo', [True, False])
def test_ade20k_loads_with_mmseg_pipelines(ade20k, tmp_path, with_metainfo):
    cfg = base_config(tmp_path, 'mmseg::_base_/datasets/ade20k.py')
    train_cfg = dict(ade20k['train_dataset'])
    val_cfg = dict(ade20k['val_dataset'])
    if not with_metainfo:  # keep all 150 ADE20K classes
        del train_cfg['metainfo'], val_cfg['metainfo']
    train_set = build_dataset('mmseg', train_cfg, cfg.train_pipeline)
    val_set = build_dataset('mmseg', val_cfg, cfg.test_pipeline)
    assert (len(train_set), len(val_set)) == (4, 3)
    classes = train_set.metainfo['classes']
    assert len(classes) == (NUM_CLASSES if with_metainfo else 150)
    assert classes[:NUM_CLASSES] == ADE20K_CLASSES[:NUM_CLASSES]

    sample = train_set[0]
    image, gt = sample['inputs'], sample['data_samples'].gt_sem_seg.data
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    assert gt.shape == (1, *image.shape[1:])
    assert set(gt.unique().tolist()) <= set(range(NUM_CLASSES)) | {255}

    # reduce_zero_label: "other" (0) is ignored, value k is class k - 1.
    for index in range(len(val_set)):
        sample = val_set[index]
        raw = np.asarray(Image.open(sample['data_samples'].seg_map_path))
        gt = sample['data_samples'].gt_sem_seg.data[0].numpy()
        np.testing.assert_array_equal(
            gt, np.where(raw == 0, 255, raw.astype(int) - 1)
        )


def test_coco_annotations_are_valid_polygons(coco):
    from pycocotools.coco import COCO

    data_root = Path(coco['data_root'])
    image_ids = {}
    for split, count in (('train', 4), ('val', 3)):
        ann_file = data_root / 'annotations' / f'instances_{split}2017.json'
        api = COCO(str(ann_file))
        assert len(api.getImgIds()) == count
        assert [c['name'] for c in api.loadCats(api.getCatIds())] == list(
            COCO_CLASSES
        )
        image_ids[split] = set(api.getImgIds())
        assert api.getAnnIds(), 'no annotations'
        for ann in api.loadAnns(api.getAnnIds()):
            info = api.loadImgs(ann['image_id'])[0]
            assert (data_root / f'{split}2017' / info['file_name']).is_file()
            assert ann['iscrowd'] == 0
            assert ann['category_id'] in COCO_CATEGORY_IDS[:NUM_CLASSES]
            x, y, w, h = ann['bbox']
            assert 0 <= x and 0 <= y and w > 1 and h > 1
            assert x + w <= info['width'] and y + h <= info['height']
            # pycocotools rasterizes the polygon to (almost) the stated box
            # and area.
            mask = api.annToMask(ann)
            rows, cols = np.nonzero(mask)
            assert abs(cols.min() - x) <= 1.5 and abs(rows.min() - y) <= 1.5
            assert abs(cols.max() + 1 - (x + w)) <= 1.5
            assert abs(rows.max() + 1 - (y + h)) <= 1.5
            assert abs(mask.sum() - ann['area']) <= 0.15 * ann['area'] + 4
    assert not image_ids['train'] & image_ids['val']


@pytest.mark.parametrize('with_metainfo', [True, False])
def test_coco_loads_with_mmdet_pipeline(coco, tmp_path, with_metainfo):
    cfg = base_config(tmp_path, 'mmdet::_base_/datasets/coco_instance.py')
    train_cfg = dict(cfg.train_dataloader.dataset)
    train_cfg.update(coco['train_dataset'])
    if not with_metainfo:  # keep mmdet's 80 classes
        del train_cfg['metainfo']
    dataset = build_dataset('mmdet', train_cfg, cfg.train_pipeline)
    # filter_cfg (empty images, min_size=32) drops nothing.
    assert len(dataset) == 4
    from pycocotools.coco import COCO

    api = COCO(Path(train_cfg['data_root']) / train_cfg['ann_file'])
    for index in range(len(dataset)):
        sample = dataset[index]
        image, gt = sample['inputs'], sample['data_samples'].gt_instances
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        # Every annotation of the image, none dropped or invented.
        expected = len(api.getAnnIds(imgIds=sample['data_samples'].img_id))
        assert expected > 0 and len(gt) == expected
        assert gt.bboxes.shape == (len(gt), 4)
        assert gt.masks.masks.shape == (len(gt), *image.shape[1:])
        assert gt.masks.masks.any(axis=(1, 2)).all()
        assert gt.labels.max() < NUM_CLASSES


def test_coco_metric_scores_ground_truth_as_one(coco):
    from mmdet.evaluation import CocoMetric
    from pycocotools.coco import COCO

    evaluator_cfg = dict(coco['val_evaluator'])
    del evaluator_cfg['type']
    api = COCO(evaluator_cfg['ann_file'])
    label_of = {cat_id: i for i, cat_id in enumerate(COCO_CATEGORY_IDS)}

    def evaluate(box_shift):
        metric = CocoMetric(**evaluator_cfg)
        metric.dataset_meta = dict(classes=coco['classes'])
        for image_id in api.getImgIds():
            anns = api.loadAnns(api.getAnnIds(imgIds=[image_id]))
            info = api.loadImgs(image_id)[0]
            bboxes = torch.tensor(
                [
                    [x, y, x + w, y + h]
                    for x, y, w, h in (a['bbox'] for a in anns)
                ]
            )
            bboxes[:, 0::2] += box_shift * (bboxes[:, 2:3] - bboxes[:, 0:1])
            prediction = dict(
                bboxes=bboxes,
                scores=torch.ones(len(anns)),
                labels=torch.tensor(
                    [label_of[a['category_id']] for a in anns]
                ),
                masks=torch.from_numpy(
                    np.stack([api.annToMask(a) for a in anns]).astype(bool)
                ),
            )
            metric.process(
                {},
                [
                    dict(
                        img_id=image_id,
                        ori_shape=(info['height'], info['width']),
                        pred_instances=prediction,
                    )
                ],
            )
        return metric.compute_metrics(metric.results)

    perfect = evaluate(box_shift=0.0)
    assert perfect['bbox_mAP'] == pytest.approx(1.0)
    assert perfect['segm_mAP'] == pytest.approx(1.0)
    # Boxes shifted by 40% of their width no longer match at IoU >= 0.5.
    shifted = evaluate(box_shift=0.4)
    assert shifted['bbox_mAP'] < 0.5
    assert shifted['segm_mAP'] == pytest.approx(1.0)


def test_imagenet_annotation_files_match_folders(imagenet):
    from mmpretrain.datasets import CustomDataset

    data_root = Path(imagenet['data_root'])
    classes = imagenet['classes']
    assert classes == tuple(sorted(classes))
    assert (data_root / 'meta' / 'classes.txt').read_text().split() == list(
        classes
    )
    for split, count in (('train', 6), ('val', 3)):
        lines = (data_root / 'meta' / f'{split}.txt').read_text().splitlines()
        assert len(lines) == count
        pairs = [line.rsplit(' ', 1) for line in lines]
        for relative_path, label in pairs:
            assert relative_path.endswith('.JPEG')
            assert relative_path.split('/')[0] == classes[int(label)]
            assert (data_root / split / relative_path).is_file()
        assert {int(label) for _, label in pairs} == set(range(NUM_CLASSES))
        # mmpretrain's folder scan (no ann_file) gives the same labels.
        scanned = CustomDataset(data_root=str(data_root), data_prefix=split)
        assert scanned.metainfo['classes'] == classes
        scanned_pairs = []
        for index in range(len(scanned)):
            info = scanned.get_data_info(index)
            path = Path(info['img_path']).relative_to(data_root / split)
            scanned_pairs.append((path.as_posix(), info['gt_label']))
        assert sorted(scanned_pairs) == sorted(
            (path, int(label)) for path, label in pairs
        )


def test_imagenet_images_show_their_class(imagenet):
    data_root = Path(imagenet['data_root'])
    rgb_of = {
        class_appearance(i).name: class_appearance(i).rgb
        for i in range(NUM_CLASSES)
    }
    for line in (data_root / 'meta' / 'train.txt').read_text().splitlines():
        relative_path, label = line.rsplit(' ', 1)
        image = np.asarray(Image.open(data_root / 'train' / relative_path))
        expected = rgb_of[imagenet['classes'][int(label)]]
        distance = np.abs(image.astype(int) - expected).max(axis=2)
        # The one object covers a good part of the image.
        assert (distance < 30).mean() > 0.1


def test_imagenet_loads_with_mmpretrain_pipelines(imagenet, tmp_path):
    cfg = base_config(
        tmp_path, 'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py'
    )
    for split, pipeline, count in (
        ('train', cfg.train_pipeline, 6),
        ('val', cfg.test_pipeline, 3),
    ):
        dataset = build_dataset(
            'mmpretrain', imagenet[f'{split}_dataset'], pipeline
        )
        assert dataset.ann_file.endswith(f'meta/{split}.txt')
        assert dataset.metainfo['classes'] == imagenet['classes']
        assert len(dataset) == count
        labels = []
        for index in range(count):
            sample = dataset[index]
            assert sample['inputs'].shape == (3, 224, 224)
            labels.append(int(sample['data_samples'].gt_label))
        assert labels == [i % NUM_CLASSES for i in range(count)]


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    kwargs = dict(num_train=3, num_val=3, image_size=40, num_classes=3)
    first = generate_datasets('all', tmp_path / 'a', seed=7, **kwargs)
    generate_datasets('all', tmp_path / 'b', seed=7, **kwargs)
    generate_datasets('all', tmp_path / 'c', seed=8, **kwargs)
    assert set(first) == {'ade20k', 'coco', 'imagenet'}
    same_a, same_b = read_tree(tmp_path / 'a'), read_tree(tmp_path / 'b')
    # Markers, ADE20K images+labels, COCO images+jsons, ImageNet+meta.
    assert len(same_a) == 3 + 12 + (6 + 2) + (6 + 3)
    assert same_a == same_b
    other = read_tree(tmp_path / 'c')
    images = [p for p in same_a if p.lower().endswith(('.jpg', '.jpeg'))]
    assert len(images) == 18
    for path in images:
        assert other[path] != same_a[path], path


def test_image_count_does_not_change_earlier_images(tmp_path):
    few = generate_ade20k(tmp_path / 'few', num_train=2, num_val=1)
    many = generate_ade20k(tmp_path / 'many', num_train=5, num_val=1)
    few_files = read_tree(Path(few['data_root']))
    many_files = read_tree(Path(many['data_root']))
    for path, content in few_files.items():
        if path != MARKER_FILE:
            assert many_files[path] == content


@pytest.mark.parametrize(
    'kwargs, message',
    [
        (dict(layouts='voc'), "unknown layout 'voc'"),
        (dict(layouts=['coco', 'pascal']), "unknown layout 'pascal'"),
        (dict(num_train=0), 'num_train must be a positive integer, got 0'),
        (dict(num_val=-2), 'num_val must be a positive integer, got -2'),
        (dict(num_classes=0), 'num_classes must be a positive integer'),
        (dict(max_objects=0), 'max_objects must be a positive integer'),
        (dict(num_train=2.5), 'num_train must be a positive integer'),
        (dict(image_size=16), 'at least 32 pixels'),
        (dict(image_size=(64, 64, 3)), 'image_size must be an integer or'),
        (dict(seed=-1), 'seed must be a non-negative integer'),
        (dict(layouts='coco', num_classes=81), 'at most 80 for the coco'),
        (dict(num_classes=5, num_val=4), r'num_val \(4\) must be at least'),
    ],
)
def test_bad_arguments_fail_before_writing(tmp_path, kwargs, message):
    arguments = dict(layouts='all', root=tmp_path / 'out', num_train=8)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        generate_datasets(**arguments)
    assert not (tmp_path / 'out').exists()


def test_overwrite_replaces_only_generated_directories(tmp_path):
    generate_coco_instances(tmp_path, num_train=2, num_val=1)
    stale = tmp_path / 'coco' / 'train2017' / 'stale.jpg'
    stale.write_bytes(b'')
    with pytest.raises(FileExistsError, match='overwrite=True'):
        generate_coco_instances(tmp_path, num_train=2, num_val=1)
    generate_coco_instances(tmp_path, num_train=2, num_val=1, overwrite=True)
    assert not stale.exists()
    marker = json.loads((tmp_path / 'coco' / MARKER_FILE).read_text())
    assert marker['num_train'] == 2 and marker['layout'] == 'coco'

    foreign = tmp_path / LAYOUT_DIRS['imagenet']
    foreign.mkdir()
    (foreign / 'precious.txt').write_text('keep me')
    with pytest.raises(FileExistsError, match='refusing to delete'):
        generate_imagenet(tmp_path, overwrite=True)
    assert (foreign / 'precious.txt').read_text() == 'keep me'


def load_cli():
    return load_tool('make_synthetic_data')


def test_cli_writes_what_the_api_writes(tmp_path, capsys):
    cli = load_cli()
    cli.main(
        ['ade20k', 'imagenet', '--out', str(tmp_path / 'cli'),
         '--num-train', '4', '--num-val', '2', '--image-size', '48', '40',
         '--num-classes', '2', '--seed', '3']
    )  # fmt: skip
    output = capsys.readouterr().out
    assert 'ADE20KDataset' in output and "'split': 'val'" in output
    generate_datasets(
        ['ade20k', 'imagenet'],
        tmp_path / 'api',
        num_train=4,
        num_val=2,
        image_size=(48, 40),
        num_classes=2,
        seed=3,
    )
    assert read_tree(tmp_path / 'cli') == read_tree(tmp_path / 'api')
    image = next((tmp_path / 'cli' / 'imagenet' / 'train').rglob('*.JPEG'))
    assert Image.open(image).size == (48, 40)


def test_cli_reports_bad_input(tmp_path, capsys):
    cli = load_cli()
    with pytest.raises(SystemExit, match='num_val must be a positive'):
        cli.main(['coco', '--out', str(tmp_path), '--num-val', '0'])
    # A usage error of the shared size parser (exit status 2).
    with pytest.raises(SystemExit) as exited:
        cli.main(
            ['coco', '--out', str(tmp_path), '--image-size', '1', '2', '3']
        )
    assert exited.value.code == 2
    assert '--image-size takes one or two sizes' in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_import_needs_no_toolkit():
    code = textwrap.dedent("""
        import sys
        import slak_mm.datasets
        print(sorted(m for m in ('mmdet', 'mmseg', 'mmpretrain')
                     if m in sys.modules))
    """)
    result = subprocess.run(
        [sys.executable, '-c', code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == '[]'


# ---------------------------------------------------------------------------
# ade20k-context: labels that need long-range context

CONTEXT = dict(num_train=4, num_val=3, image_size=(64, 56), num_classes=4)


@pytest.fixture(scope='module')
def context(tmp_path_factory):
    return generate_ade20k_context(
        tmp_path_factory.mktemp('context'), **CONTEXT
    )


def test_context_layout_loads_with_mmseg(context, tmp_path):
    data_root = Path(context['data_root'])
    assert data_root.name == 'ADEChallengeData2016'
    assert context['layout'] == CONTEXT_LAYOUT
    assert context['classes'] == ADE20K_CLASSES[:4]
    for split, count in (('training', 4), ('validation', 3)):
        images = sorted((data_root / 'images' / split).iterdir())
        labels = sorted((data_root / 'annotations' / split).iterdir())
        assert [p.stem for p in images] == [p.stem for p in labels]
        assert len(images) == count
        for image_path, label_path in zip(images, labels):
            image, label = Image.open(image_path), Image.open(label_path)
            assert (image.format, image.mode, image.size) == (
                'JPEG', 'RGB', (64, 56),
            )  # fmt: skip
            assert (label.format, label.mode, label.size) == (
                'PNG', 'L', (64, 56),
            )  # fmt: skip
            assert set(np.unique(np.asarray(label)).tolist()) <= set(range(5))
    cfg = base_config(tmp_path, 'mmseg::_base_/datasets/ade20k.py')
    val_set = build_dataset('mmseg', context['val_dataset'], cfg.test_pipeline)
    assert len(val_set) == 3
    sample = val_set[0]
    raw = np.asarray(Image.open(sample['data_samples'].seg_map_path))
    gt = sample['data_samples'].gt_sem_seg.data[0].numpy()
    np.testing.assert_array_equal(
        gt, np.where(raw == 0, 255, raw.astype(int) - 1)
    )


def test_context_is_deterministic(tmp_path):
    kwargs = dict(num_train=3, num_val=2, image_size=48, num_classes=3)
    generate_ade20k_context(tmp_path / 'a', seed=5, **kwargs)
    generate_ade20k_context(tmp_path / 'b', seed=5, **kwargs)
    generate_ade20k_context(tmp_path / 'c', seed=6, **kwargs)
    same_a, same_b = read_tree(tmp_path / 'a'), read_tree(tmp_path / 'b')
    assert len(same_a) == 1 + 2 * (3 + 2)
    assert same_a == same_b
    other = read_tree(tmp_path / 'c')
    for path in same_a:
        if path.endswith('.jpg'):
            assert other[path] != same_a[path], path
    # The CLI writes the same files.
    load_cli().main(
        ['ade20k-context', '--out', str(tmp_path / 'cli'), '--num-train',
         '3', '--num-val', '2', '--image-size', '48', '--num-classes', '3',
         '--seed', '5']
    )  # fmt: skip
    assert read_tree(tmp_path / 'cli') == same_a


@pytest.mark.parametrize(
    'kwargs, message',
    [
        (dict(image_size=(66, 64)), 'multiple of 4'),
        (dict(image_size=(64, 40)), 'height of at least 48'),
        (dict(num_classes=11), 'at most 10 for the ade20k-context'),
        (dict(layouts=['ade20k', 'ade20k-context']), 'both write'),
    ],
)
def test_context_bad_arguments(tmp_path, kwargs, message):
    arguments = dict(layouts='ade20k-context', root=tmp_path / 'out')
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        generate_datasets(**arguments)
    assert not (tmp_path / 'out').exists()


def test_context_cue_is_far_from_every_labelled_pixel():
    """Only marker pixels depend on a class, and none is near a labelled
    pixel of its stripe: the rest is grey noise drawn without the class."""
    for index in range(20):
        rng = np.random.default_rng([3, index])
        scene = sample_context_scene(rng, 64, 96, num_classes=4)
        image = scene.image.astype(int)
        assert [s[0] for s in scene.stripes][0] == 0
        assert scene.stripes[-1][1] == 64
        for start, end, class_index in scene.stripes:
            assert start % 4 == 0 and end % 4 == 0
            labels = scene.label_map[:, start:end]
            assert set(np.unique(labels).tolist()) <= {0, class_index + 1}
            cue_rows = np.flatnonzero(scene.cue_mask[:, start])
            labelled_rows = np.flatnonzero(labels[:, 0])
            assert len(cue_rows) and len(labelled_rows)
            distance = np.abs(labelled_rows[:, None] - cue_rows[None, :])
            assert distance.min() > CUE_CLEARANCE
            # Markers show the class colour; elsewhere R = G = B.
            marker = image[cue_rows, start:end].reshape(-1, 3)
            expected = class_appearance(class_index).rgb
            assert np.abs(np.median(marker, 0) - expected).max() < 10
        grey = image[~scene.cue_mask]
        assert (grey == grey[:, :1]).all()


def _probe_accuracy(layers, images, labels, val_images, val_labels):
    """Trains a small conv probe; returns its pixel accuracy on val."""
    torch.manual_seed(0)
    probe = torch.nn.Sequential(*layers, torch.nn.Conv2d(8, 4, 1))
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        batch = torch.randint(0, len(images), (8,), generator=generator)
        loss = torch.nn.functional.cross_entropy(
            probe(images[batch]), labels[batch], ignore_index=-1
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = probe(val_images).argmax(1)
    valid = val_labels >= 0
    return (
        (predicted == val_labels) & valid
    ).sum().item() / valid.sum().item()


def test_context_labels_cannot_be_read_from_a_7x7_window(tmp_path):
    """A probe that sees 7x7 windows does no better than the most frequent
    class; the same probe reading whole columns does far better."""
    summary = generate_ade20k_context(
        tmp_path, num_train=64, num_val=64, image_size=64, num_classes=4
    )
    data_root = Path(summary['data_root'])

    def load(split):
        images, labels = [], []
        for path in sorted((data_root / 'annotations' / split).iterdir()):
            labels.append(np.asarray(Image.open(path)).astype(np.int64) - 1)
            image_path = data_root / 'images' / split / f'{path.stem}.jpg'
            images.append(np.asarray(Image.open(image_path)))
        images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
        return (images.float() - 128) / 64, torch.from_numpy(np.stack(labels))

    train, val = load('training'), load('validation')
    _, constant_accuracy = constant_prediction_scores(
        data_root / 'annotations' / 'validation', 4
    )
    nn = torch.nn
    window_7x7 = [
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
    ]  # fmt: skip
    whole_column = [
        nn.Conv2d(3, 8, 1), nn.ReLU(),
        nn.Conv2d(8, 8, (127, 1), padding=(63, 0), groups=8), nn.ReLU(),
    ]  # fmt: skip
    local = 100 * _probe_accuracy(window_7x7, *train, *val)
    column = 100 * _probe_accuracy(whole_column, *train, *val)
    assert local < constant_accuracy + 2, (local, constant_accuracy)
    assert column > constant_accuracy + 20, (column, constant_accuracy)


def test_constant_prediction_scores(tmp_path):
    labels = np.zeros((4, 5), dtype=np.uint8)
    labels[:, :3] = 1  # 12 pixels of class 0
    labels[:, 3] = 3  # 4 pixels of class 2, the last column is ignored
    Image.fromarray(labels, 'L').save(tmp_path / 'a.png')
    miou, accuracy = constant_prediction_scores(tmp_path, 3)
    assert accuracy == pytest.approx(75.0)
    assert miou == pytest.approx(75.0 / 2)
    with pytest.raises(ValueError, match='no labelled pixels'):
        Image.fromarray(labels * 0, 'L').save(tmp_path / 'a.png')
        constant_prediction_scores(tmp_path, 3)
