"""``tools/test.py --amp``: bf16 CPU autocast evaluation for all three
toolkits, against the fp32 evaluation of the same checkpoint.

Per toolkit, one config from tests/e2e_tasks.py (generated data) and
one checkpoint (trained briefly through tools/train.py for segmentation and
classification, saved untrained for detection) are tested twice through
the real tool, with and without ``--amp``; a probe hook in both runs
records the dtypes the backbone's large-kernel convs and block MLPs return.
"""

import json
import logging
import os
import os.path as osp
import pickle
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS, LOOPS, METRICS
from mmengine.runner import BaseLoop, Runner
from mmengine.structures import BaseDataElement, InstanceData
from PIL import Image

from slak_mm.apis import (
    add_fp32_outputs_hook,
    build_model_from_config,
    enable_test_amp,
)
from slak_mm.engine.hooks import FP32OutputsHook
from slak_mm.models.backends import torch_private
from slak_mm.models.large_kernel import LargeKernelConv
from slak_mm.models.mlp import BlockMLP

from .e2e_tasks import (
    classification_task,
    detection_task,
    segmentation_task,
)
from .helpers import (
    REPO,
    randomize_batch_norms,
    run_command,
    saved_test_metrics,
)
from .tiny_configs import segmentation_config

# The probe's config module: this file, imported by the tool's process.
PROBE_MODULE = 'tests.test_test_amp'
# Blocks of the one-block-per-stage SLaK of the end-to-end configs.
NUM_BLOCKS = 4


@HOOKS.register_module(force=True)
class BackboneDtypeProbe(Hook):
    """Writes to ``out_file`` (JSON) the dtypes that every
    ``LargeKernelConv`` and ``BlockMLP`` of the backbone returned during the
    test run: ``{module name: [dtype, ...]}``."""

    def __init__(self, out_file: str) -> None:
        self.out_file = out_file
        self.seen = {}

    def before_test(self, runner) -> None:
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        for name, module in model.backbone.named_modules():
            if isinstance(module, (LargeKernelConv, BlockMLP)):
                module.register_forward_hook(self._record(name))

    def _record(self, name):
        def record(module, args, output):
            self.seen.setdefault(name, set()).add(str(output.dtype))

        return record

    def after_test(self, runner) -> None:
        with open(self.out_file, 'w') as f:
            json.dump({k: sorted(v) for k, v in self.seen.items()}, f)


@LOOPS.register_module(force=True)
class LoopWithoutFp16(BaseLoop):
    """A test loop that takes no ``fp16`` argument."""

    def __init__(self, runner, dataloader) -> None:
        super().__init__(runner, dataloader)

    def run(self) -> None:
        pass


def train_checkpoint(task, tmp_path, run_command):
    """Trains the task's config through ``tools/train.py`` (as the
    end-to-end test does) and returns its final checkpoint. Layer scales
    start at 1 instead of 1e-6, so the blocks' bf16 outputs reach the
    predictions."""
    cfg = Config.fromfile(task.config)
    cfg.model.backbone.layer_scale_init_value = 1.0
    cfg.dump(task.config)
    work_dir = str(tmp_path / 'train')
    run_command(
        [sys.executable, 'tools/train.py', task.config, '--work-dir', work_dir]
    )
    return task.checkpoint(work_dir, task.length)


def save_untrained_checkpoint(task, tmp_path, run_command):
    """Saves the task's model initialised, with random BN statistics and
    layer scales of 0.5-1 (instead of 1e-6), untrained."""
    model, _ = build_model_from_config(task.config)
    model.init_weights()
    randomize_batch_norms(model)
    with torch.no_grad():
        for name, param in model.backbone.named_parameters():
            if name.endswith('gamma'):
                param.uniform_(0.5, 1.0)
    path = str(tmp_path / 'untrained.pth')
    torch.save(dict(state_dict=model.state_dict()), path)
    return path


def with_probe(config, out_file, tag):
    """Writes a copy of ``config`` (``<config>_<tag>.py``) with
    :class:`BackboneDtypeProbe` writing to ``out_file``."""
    cfg = Config.fromfile(config)
    imports = list(cfg.get('custom_imports', {}).get('imports', []))
    cfg.custom_imports = dict(
        imports=imports + [PROBE_MODULE], allow_failed_imports=False
    )
    cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
        dict(type='BackboneDtypeProbe', out_file=out_file)
    ]
    path = config.replace('.py', f'_{tag}.py')
    cfg.dump(path)
    return path


# Per toolkit: the config and how its checkpoint is made. Detection is
# left untrained: a few CPU iterations leave its COCO mAP at 0 anyway, and
# training it takes longer than both test runs together.
TOOLKITS = dict(
    segmentation=(segmentation_task, train_checkpoint),
    classification=(classification_task, train_checkpoint),
    detection=(detection_task, save_untrained_checkpoint),
)


@pytest.fixture(scope='module', params=list(TOOLKITS))
def fp32_and_amp_runs(request, tmp_path_factory):
    """The task, and per precision (``'fp32'``, ``'amp'``) the test run's
    metrics, predictions (``--out``) and probed backbone dtypes."""
    make_task, make_checkpoint = TOOLKITS[request.param]
    tmp_path = tmp_path_factory.mktemp(request.param)
    task = make_task(tmp_path)
    checkpoint = make_checkpoint(task, tmp_path, run_command)
    # The probe module is imported from this repository by the tool.
    paths = [REPO] + [p for p in [os.environ.get('PYTHONPATH')] if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    runs = {}
    for precision, flags in (('fp32', []), ('amp', ['--amp'])):
        work_dir = tmp_path / precision
        work_dir.mkdir()
        dtypes = str(work_dir / 'dtypes.json')
        out = str(work_dir / task.out)
        output = run_command(
            [
                sys.executable,
                'tools/test.py',
                with_probe(task.config, dtypes, precision),
                checkpoint,
                '--work-dir',
                str(work_dir),
                '--out',
                out,
                *flags,
            ],
            env=env,
        )
        with open(dtypes) as f:
            probed = json.load(f)
        runs[precision] = SimpleNamespace(
            output=output,
            metrics=saved_test_metrics(str(work_dir)),
            predictions=read_predictions(out),
            dtypes=probed,
        )
    return SimpleNamespace(task=task, name=request.param, **runs)


def read_predictions(out):
    """Label maps (mmseg: a directory of PNGs) or the .pkl's samples."""
    if osp.isdir(out):
        return [
            np.array(Image.open(osp.join(out, name)))
            for name in sorted(os.listdir(out))
        ]
    with open(out, 'rb') as f:
        return pickle.load(f)


# --amp against fp32, per metric: the largest absolute difference allowed.
# Segmentation (percent, over 4 x 64x64 label maps): measured 0.08 aAcc,
# 0.02 mIoU, 0.19 mAcc. Classification (percent of 4 samples): see
# classification_tolerance. Detection (COCO mAP, 0-1): an untrained
# detector scores 0 in both runs, so this check is weak there;
# test_amp_predictions_match_fp32 compares its boxes.
METRIC_TOLERANCES = dict(
    segmentation={'aAcc': 1.0, 'mIoU': 1.0, 'mAcc': 1.0},
    detection={'coco/bbox_mAP': 0.01, 'coco/segm_mAP': 0.01},
)
# bf16 moves the softmax scores by at most this much (measured <= 7e-4).
SCORE_TOLERANCE = 5e-3


def clear_top1(sample):
    """Whether the fp32 top-1 score leads the runner-up by more than twice
    what bf16 may move each score: then bf16 must predict the same label
    (the briefly trained model has near ties in some runs)."""
    top2 = sample['pred_score'].topk(2).values
    return bool(top2[0] - top2[1] > 2 * SCORE_TOLERANCE)


def classification_tolerance(fp32_predictions):
    """Top-1 accuracy may differ by the samples without a clear top-1."""
    unclear = sum(not clear_top1(s) for s in fp32_predictions)
    return {'accuracy/top1': 100.0 * unclear / len(fp32_predictions)}


def autocast_dtype():
    """What mmengine's autocast runs in: fp16 on CUDA, else bf16."""
    return 'torch.float16' if torch.cuda.is_available() else 'torch.bfloat16'


# The bf16 runs take oneDNN's bf16 kernels or standard ops, per CPU.
@pytest.mark.cpu_capability
def test_amp_metrics_match_fp32(fp32_and_amp_runs):
    runs = fp32_and_amp_runs
    if torch.cuda.is_available():
        assert 'tests under fp16 CUDA autocast' in runs.amp.output
    else:
        assert 'tests under bf16 CPU autocast' in runs.amp.output
        # The tool runs on this CPU: it warns iff oneDNN lacks bf16 here.
        warned = 'This CPU has no bf16 support in oneDNN' in runs.amp.output
        assert warned == (not torch_private.onednn_supports(torch.bfloat16))
    assert 'autocast' not in runs.fp32.output
    if runs.name == 'detection' and not torch.cuda.is_available():
        # RPN head, and per cascade stage (3) a box and a mask RoI
        # extractor and head.
        assert '13 RoI extractors and heads hand fp32' in runs.amp.output
    if runs.name == 'classification':
        tolerances = classification_tolerance(runs.fp32.predictions)
    else:
        tolerances = METRIC_TOLERANCES[runs.name]
    for key, tolerance in tolerances.items():
        fp32, amp = runs.fp32.metrics[key], runs.amp.metrics[key]
        assert abs(amp - fp32) <= tolerance, (key, fp32, amp)


@pytest.mark.cpu_capability
def test_amp_runs_the_backbone_in_low_precision(fp32_and_amp_runs):
    """Every block's large-kernel conv and MLP returned bf16 tensors in the
    --amp run and fp32 ones without it."""
    runs = fp32_and_amp_runs
    modules = {
        f'stages.{stage}.0.{part}'
        for stage in range(NUM_BLOCKS)
        for part in ('large_kernel', 'mlp')
    }
    assert runs.fp32.dtypes == {name: ['torch.float32'] for name in modules}
    assert runs.amp.dtypes == {name: [autocast_dtype()] for name in modules}


def reduced_precision_tensors(value, where='sample'):
    """Where in ``value`` (nested dicts, lists, tuples, data elements) a
    bf16 or fp16 tensor lies."""
    if isinstance(value, torch.Tensor):
        reduced = value.dtype in (torch.bfloat16, torch.float16)
        return [where] if reduced else []
    if isinstance(value, BaseDataElement):
        value = dict(value.items())
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return []
    return [
        found
        for key, item in items
        for found in reduced_precision_tensors(item, f'{where}.{key}')
    ]


def box_matches(fp32, amp):
    """Per --amp detection: the best IoU with a same-label fp32 detection,
    and that detection's index."""
    from mmdet.structures.bbox import bbox_overlaps

    iou = bbox_overlaps(amp['bboxes'], fp32['bboxes'])
    same_label = amp['labels'][:, None] == fp32['labels'][None]
    return (iou * same_label).max(1)


def mask_iou(rle_a, rle_b):
    from pycocotools import mask as mask_utils

    a, b = mask_utils.decode([rle_a, rle_b]).astype(bool).transpose(2, 0, 1)
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.mark.cpu_capability
def test_amp_predictions_match_fp32(fp32_and_amp_runs):
    """The --out predictions of both runs, one test sample at a time."""
    runs = fp32_and_amp_runs
    fp32, amp = runs.fp32.predictions, runs.amp.predictions
    assert len(fp32) == len(amp) == runs.task.num_test
    # --amp changes how the model computes, not the dtypes it returns.
    for sample in amp:
        assert not reduced_precision_tensors(sample), runs.name
    if runs.name == 'segmentation':
        # Label maps: measured 99.3-99.6% of the pixels equal per image.
        for fp32_map, amp_map in zip(fp32, amp):
            assert (fp32_map == amp_map).mean() >= 0.97
    elif runs.name == 'classification':
        # Softmax scores: measured <= 7e-4 apart; the same label wherever
        # the fp32 top-1 is clear (every sample in most runs).
        for fp32_sample, amp_sample in zip(fp32, amp):
            difference = amp_sample['pred_score'] - fp32_sample['pred_score']
            assert difference.abs().max() <= SCORE_TOLERANCE
            if clear_top1(fp32_sample):
                assert torch.equal(
                    amp_sample['pred_label'], fp32_sample['pred_label']
                )
    else:
        for fp32_sample, amp_sample in zip(fp32, amp):
            ours = fp32_sample['pred_instances']
            theirs = amp_sample['pred_instances']
            assert len(theirs['scores']) == len(ours['scores']) > 0
            # Near-tied scores may swap ranks: compare the sorted scores
            # (measured <= 2.6e-3 apart).
            sorted_difference = (
                theirs['scores'].sort().values - ours['scores'].sort().values
            )
            assert sorted_difference.abs().max() <= 1e-2
            # Boxes and masks: measured 19 of 20 boxes per image with a
            # same-label fp32 box at IoU >= 0.9 (the 20th lies at the
            # max_per_img cut or swapped its label on a near tie).
            best_iou, index = box_matches(ours, theirs)
            matched = best_iou >= 0.9
            assert matched.float().mean() >= 0.8, best_iou
            for amp_index in torch.nonzero(matched).flatten().tolist():
                fp32_index = int(index[amp_index])
                assert (
                    mask_iou(
                        theirs['masks'][amp_index], ours['masks'][fp32_index]
                    )
                    >= 0.8
                )


# ----------------------------------------------------------------------
# enable_test_amp and FP32OutputsHook in-process
# ----------------------------------------------------------------------


def config_with_test_cfg(test_cfg, scope='mmseg'):
    return Config(dict(default_scope=scope, test_cfg=test_cfg))


@pytest.mark.parametrize(
    'test_cfg, scope',
    [
        (dict(type='TestLoop', _scope_='mmseg'), 'mmseg'),
        (dict(type='TestLoop', _scope_='mmdet'), 'mmdet'),
        (dict(), 'mmpretrain'),  # no type: mmengine's TestLoop
    ],
)
def test_enable_test_amp_sets_the_loops_fp16(test_cfg, scope):
    cfg = config_with_test_cfg(test_cfg, scope)
    enable_test_amp(cfg)
    assert cfg.test_cfg.fp16 is True


def test_add_fp32_outputs_hook_only_under_autocast_and_once():
    cfg = config_with_test_cfg(dict(type='TestLoop'))
    assert not add_fp32_outputs_hook(cfg)
    assert 'custom_hooks' not in cfg
    cfg.custom_hooks = [dict(type='SegLabelCheckHook')]
    enable_test_amp(cfg)
    assert add_fp32_outputs_hook(cfg)
    assert add_fp32_outputs_hook(cfg)  # already there: not added twice
    assert [h['type'] for h in cfg.custom_hooks] == [
        'SegLabelCheckHook',
        'FP32OutputsHook',
    ]


@pytest.mark.parametrize(
    'test_cfg, error, message',
    [
        (None, ValueError, 'no test_cfg dict'),
        ('TestLoop', ValueError, 'no test_cfg dict'),
        (
            dict(type='LoopWithoutFp16'),
            ValueError,
            'test loop LoopWithoutFp16 takes no fp16 argument',
        ),
        (
            dict(type='NoSuchLoop'),
            KeyError,
            "test_cfg.type 'NoSuchLoop' is not a registered loop",
        ),
    ],
)
def test_enable_test_amp_rejects(test_cfg, error, message):
    cfg = config_with_test_cfg(test_cfg)
    with pytest.raises(error, match=message):
        enable_test_amp(cfg)


def test_enable_test_amp_rejects_a_config_without_test_cfg():
    with pytest.raises(ValueError, match='no test_cfg dict'):
        enable_test_amp(Config(dict(default_scope='mmseg')))


@pytest.mark.parametrize('bf16_supported', [False, True])
def test_enable_test_amp_warns_without_onednn_bf16(
    monkeypatch, bf16_supported
):
    from slak_mm.apis import config as config_rewrites

    logged = []
    monkeypatch.setattr(
        config_rewrites,
        'print_log',
        lambda msg, logger=None, level=None: logged.append((msg, level)),
    )
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(
        config_rewrites, 'onednn_supports', lambda dtype: bf16_supported
    )
    enable_test_amp(config_with_test_cfg(dict(type='TestLoop')))
    assert logged[0] == (
        'No CUDA device: --amp tests under bf16 CPU autocast',
        None,
    )
    warnings = [m for m, level in logged if level == logging.WARNING]
    if bf16_supported:
        assert len(logged) == 1
    else:
        (warning,) = warnings
        assert 'no bf16 support in oneDNN' in warning
        assert 'slower than fp32' in warning


class StepModel(torch.nn.Sequential):
    """Modules whose val/test step returns what ``outputs(data)`` does."""

    def __init__(self, outputs, *modules):
        super().__init__(*modules)
        self.outputs = outputs

    def val_step(self, data):
        return self.outputs(data)

    def test_step(self, data):
        return self.outputs(data)


def hook_runner(model, fp16):
    """What FP32OutputsHook reads of a runner: the model and the loops."""
    loop = SimpleNamespace(fp16=fp16)
    return SimpleNamespace(model=model, test_loop=loop, val_loop=loop)


@pytest.mark.parametrize('fp16', [False, True])
def test_fp32_outputs_hook_gives_roi_align_fp32_only_under_autocast(
    monkeypatch, fp16
):
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    extractor = SingleRoIExtractor(
        roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
        out_channels=8,
        featmap_strides=[4],
    )
    model = StepModel(lambda data: data, extractor)
    hook = FP32OutputsHook()
    hook.before_test(hook_runner(model, fp16))
    assert bool(extractor._forward_pre_hooks) == fp16
    if fp16:
        # Under bf16 CPU autocast, RoIAlign gets (and returns) fp32.
        features = (torch.randn(1, 8, 16, 16).bfloat16(),)
        rois = torch.tensor([[0.0, 2.0, 2.0, 40.0, 40.0]])
        with torch.autocast('cpu', dtype=torch.bfloat16):
            pooled = extractor(features, rois)
        assert pooled.dtype == torch.float32
        assert pooled.shape == (1, 8, 7, 7)
    hook.after_test(None)
    assert not extractor._forward_pre_hooks
    assert 'test_step' not in model.__dict__


@pytest.mark.parametrize('stage', ['val', 'test'])
def test_fp32_outputs_hook_casts_reduced_precision_only(stage):
    def step(data):
        sample = BaseDataElement(
            pred_score=torch.tensor([0.25, 0.75]).bfloat16(),
            pred_label=torch.tensor([1]),
            pred_instances=InstanceData(
                bboxes=torch.ones(2, 4, dtype=torch.float16),
                labels=torch.tensor([0, 3]),
                areas=torch.ones(2, dtype=torch.float64),
            ),
        )
        return [sample, dict(logits=torch.zeros(3).bfloat16())]

    name = f'{stage}_step'
    model = StepModel(step)
    hook = FP32OutputsHook()
    before, after = (
        getattr(hook, f'before_{stage}'),
        getattr(hook, f'after_{stage}'),
    )
    before(hook_runner(model, fp16=False))  # no autocast: untouched
    assert name not in model.__dict__
    assert sorted(reduced_precision_tensors(step(None))) == [
        'sample.0.pred_instances.bboxes',
        'sample.0.pred_score',
        'sample.1.logits',
    ]
    before(hook_runner(model, fp16=True))
    sample, extra = getattr(model, name)(None)
    assert reduced_precision_tensors([sample, extra]) == []
    assert sample.pred_score.dtype == torch.float32
    assert torch.equal(sample.pred_score, torch.tensor([0.25, 0.75]))
    assert sample.pred_label.dtype == torch.int64
    instances = sample.pred_instances
    assert instances.bboxes.dtype == torch.float32
    assert instances.labels.dtype == torch.int64
    assert instances.areas.dtype == torch.float64
    assert extra['logits'].dtype == torch.float32
    after(None)
    assert name not in model.__dict__  # the loop's end undoes it
    assert reduced_precision_tensors(getattr(model, name)(None))


@METRICS.register_module(force=True)
class ReducedPrecisionProbe(BaseMetric):
    """Records where the predictions the evaluator gets hold a bf16/fp16
    tensor (class attribute ``found``)."""

    found = []

    def process(self, data_batch, data_samples) -> None:
        type(self).found += reduced_precision_tensors(data_samples)

    def compute_metrics(self, results) -> dict:
        return {}


@pytest.mark.parametrize('with_hook', [False, True])
def test_toolkit_runner_with_the_custom_hook_evaluates_fp32_outputs(
    tmp_path, with_hook
):
    """What mmseg's own tools/test.py builds (``Runner.from_cfg``) from a
    config with ``test_cfg.fp16`` and ``FP32OutputsHook`` in
    ``custom_hooks``: the evaluator sees fp32 predictions. Without the
    hook, autocast leaves the seg logits in bf16/fp16."""
    cfg, _ = segmentation_config(tmp_path)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.test_cfg = dict(type='TestLoop', fp16=True)
    cfg.test_evaluator = [
        cfg.test_evaluator,
        dict(type='ReducedPrecisionProbe'),
    ]
    if with_hook:
        cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
            dict(type='FP32OutputsHook')
        ]
    ReducedPrecisionProbe.found = []
    runner = Runner.from_cfg(cfg)
    runner.test()
    found = ReducedPrecisionProbe.found
    if with_hook:
        assert found == []
    else:  # the premise: autocast does reach the predictions
        assert any('seg_logits' in where for where in found), found
    # Undone after the loop.
    assert 'test_step' not in runner.model.__dict__
