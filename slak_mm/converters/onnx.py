"""Exporting trained SLaK models to ONNX and with ``torch.export``: the
logic of ``tools/deployment/export_onnx.py``.

What is exported, per task (the network on a preprocessed batch; the
data preprocessor's normalization and padding stay outside the graph):

- classification (mmpretrain ``ImageClassifier``): the head's logits,
  ``(N, num_classes)``, as ``mode='tensor'`` returns them;
- segmentation (mmseg ``EncoderDecoder``): the ``whole``-mode segmentation
  logits resized to the input, ``(N, num_classes, H, W)``, as
  ``encode_decode`` computes them (before the arg-max);
- detection (mmdet detectors): the backbone + neck features
  (``extract_feat``), e.g. five FPN maps for Cascade Mask R-CNN.

Two rewrites make the graphs exportable without changing what they
compute:

- the large kernels run through the ``'reference'`` backend during the
  export (plain ``nn.Conv2d`` per branch). The other backends fold eval-mode
  BNs and the small kernel into the strips at run time and crop kernels to
  the map, so the TorchScript exporter sees convolutions with computed
  weights ("ONNX export of convolution for kernel of unknown shape");
- :class:`StaticAdaptiveAvgPool2d` replaces ``nn.AdaptiveAvgPool2d``
  (UperNet's pyramid pooling) inside :func:`static_adaptive_pools`. ONNX has
  no adaptive average pooling, and the exporter only maps it to a plain
  pooling when the output size divides the input (pool scales 1/2/3/6 on a
  16x16 map from a 512² image do not).

The file has the static input shape it was exported at.
"""

import contextlib
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..models.backends import use_backend
from ..models.builder import (
    build_model_from_config,
    flatten_tensors,
    is_mmdet_detector,
)
from ..utils.checkpoint import load_checkpoint_strict
from .deploy import make_test_batch, relative_difference

__all__ = [
    'DEFAULT_TOLERANCE',
    'ClassifierLogits',
    'DetectorFeatures',
    'SegmentorLogits',
    'StaticAdaptiveAvgPool2d',
    'adaptive_bins',
    'build_export_model',
    'default_shape',
    'export_onnx',
    'export_program',
    'export_rewrites',
    'export_to_onnx',
    'export_wrapper',
    'run_onnxruntime',
    'static_adaptive_pools',
    'task_of',
    'torch_outputs',
]

#: Default largest ``max |torch - onnxruntime| / max |torch|``.
DEFAULT_TOLERANCE = 1e-4


def adaptive_bins(length: int, num_bins: int) -> List[Tuple[int, int]]:
    """The windows adaptive pooling averages along one axis.

    Bin ``i`` spans ``[floor(i * L / n), ceil((i + 1) * L / n))``, as in
    PyTorch's ``adaptive_avg_pool2d``; bins overlap when ``n`` does not
    divide ``L`` and repeat an element when ``n > L``.

    Args:
        length (int): Input length L along the axis.
        num_bins (int): Output length n.

    Returns:
        list[tuple[int, int]]: ``(start, end)`` of each bin, end exclusive.
    """
    if length <= 0 or num_bins <= 0:
        raise ValueError(
            f'length and num_bins must be positive, got {length}, {num_bins}'
        )
    return [
        (
            (i * length) // num_bins,
            ((i + 1) * length + num_bins - 1) // num_bins,  # ceil
        )
        for i in range(num_bins)
    ]


def _pool_axis(x: torch.Tensor, dim: int, num_bins: Optional[int]):
    """Adaptive average pooling of ``x`` along ``dim`` to ``num_bins``."""
    dim = dim % x.dim()
    # A Python int even under torch.jit.trace (where sizes are traced
    # tensors): the bins are constants of the exported graph.
    length = int(x.shape[dim])
    if num_bins is None or num_bins == length:
        return x
    if length % num_bins == 0:
        # Uniform bins: one reshape and mean (an AveragePool in ONNX terms).
        return x.unflatten(dim, (num_bins, length // num_bins)).mean(dim + 1)
    return torch.cat(
        [
            x.narrow(dim, start, end - start).mean(dim, keepdim=True)
            for start, end in adaptive_bins(length, num_bins)
        ],
        dim=dim,
    )


class StaticAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` made of slices and means, for export.

    The bins come from the input's static size (:func:`adaptive_bins`), so
    the exported graph holds only slices, means and a concatenation. The
    mean of a rectangle is the mean over its rows of the row means, so
    pooling the two axes one after the other is exact (up to float
    rounding).

    Args:
        output_size (int | tuple): As for ``nn.AdaptiveAvgPool2d`` (``None``
            keeps that axis).

    Shape:
        - Input: ``(N, C, H, W)`` (or ``(C, H, W)``).
        - Output: ``(N, C, out_h, out_w)``.
    """

    def __init__(self, output_size) -> None:
        super().__init__()
        if isinstance(output_size, int) or output_size is None:
            output_size = (output_size, output_size)
        self.output_size = tuple(output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_h, out_w = self.output_size
        return _pool_axis(_pool_axis(x, -2, out_h), -1, out_w)

    def extra_repr(self) -> str:
        return f'output_size={self.output_size}'


def _named_children_of_type(model: nn.Module, module_type: type):
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is module_type:
                yield parent, name, child


@contextlib.contextmanager
def static_adaptive_pools(model: nn.Module):
    """Swaps every ``nn.AdaptiveAvgPool2d`` of ``model`` for a
    :class:`StaticAdaptiveAvgPool2d` inside the ``with`` block.

    Global pools (output 1x1) are kept: ONNX has ``GlobalAveragePool``.
    The original modules are put back on exit, also after an error.

    Example:
        >>> with static_adaptive_pools(segmentor):
        ...     torch.onnx.export(segmentor, ...)
    """
    swapped = []
    for parent, name, pool in list(
        _named_children_of_type(model, nn.AdaptiveAvgPool2d)
    ):
        size = pool.output_size
        if size in (1, (1, 1)):
            continue
        setattr(parent, name, StaticAdaptiveAvgPool2d(size))
        swapped.append((parent, name, pool))
    try:
        yield len(swapped)
    finally:
        for parent, name, pool in swapped:
            setattr(parent, name, pool)


class ClassifierLogits(nn.Module):
    """An mmpretrain classifier's logits: ``(N, 3, H, W)`` ->
    ``(N, num_classes)`` (``mode='tensor'``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs, mode='tensor')


class SegmentorLogits(nn.Module):
    """An mmseg segmentor's ``whole``-mode logits: ``(N, 3, H, W)`` ->
    ``(N, num_classes, H, W)``.

    Runs ``encode_decode`` (backbone, decode head, bilinear resize to the
    input size), which is what ``whole`` inference computes before the
    arg-max; the auxiliary head does not run at test time.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        size = tuple(inputs.shape[2:])
        metas = [dict(img_shape=size, pad_shape=size)] * inputs.shape[0]
        return self.model.encode_decode(inputs, metas)


class DetectorFeatures(nn.Module):
    """An mmdet detector's backbone + neck: ``(N, 3, H, W)`` -> a tuple of
    feature maps (``extract_feat``, e.g. five FPN levels)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(self.model.extract_feat(inputs))


def task_of(model: nn.Module) -> str:
    """``'classification'``, ``'segmentation'`` or ``'detection'``.

    Raises:
        TypeError: For a model of none of these kinds.
    """
    if is_mmdet_detector(model):
        return 'detection'
    if hasattr(model, 'encode_decode') and hasattr(model, 'decode_head'):
        return 'segmentation'
    if hasattr(model, 'head') and hasattr(model, 'extract_feat'):
        return 'classification'
    raise TypeError(
        f'cannot export a {type(model).__name__}: expected an mmpretrain '
        'classifier, an mmseg segmentor or an mmdet detector'
    )


def export_wrapper(model: nn.Module) -> nn.Module:
    """The module whose forward is exported for ``model`` (see the module
    docstring for what each task exports)."""
    wrappers = dict(
        classification=ClassifierLogits,
        segmentation=SegmentorLogits,
        detection=DetectorFeatures,
    )
    return wrappers[task_of(model)](model).eval()


def output_names(task: str, num_outputs: int) -> List[str]:
    """Names of the graph outputs: ``logits``, ``seg_logits`` or
    ``feat0``, ``feat1``, ..."""
    if task == 'classification':
        return ['logits']
    if task == 'segmentation':
        return ['seg_logits']
    return [f'feat{i}' for i in range(num_outputs)]


def build_export_model(
    config: str,
    checkpoint: str,
    training_form: bool = False,
    cfg_options: Optional[dict] = None,
) -> Tuple[nn.Module, Any]:
    """Builds the model of ``config``, loads ``checkpoint`` strictly and
    puts it in the form to export.

    A training-form checkpoint is loaded into the training-form model and
    fused (``backbone.switch_to_deploy()``) unless ``training_form``; a
    deploy-form checkpoint needs ``model.backbone.deploy=True`` in the
    config or ``cfg_options``.

    Args:
        config (str): The config the model was trained with.
        checkpoint (str): Its checkpoint.
        training_form (bool): Keep the unfused branches.
        cfg_options (dict, optional): Overrides for the config.

    Returns:
        tuple[nn.Module, Config]: The model in eval mode, and the config.

    Raises:
        CheckpointMismatchError: If the checkpoint does not fit the model
            (missing tensors or other shapes).
        ValueError: For ``training_form`` with a deploy-form config.
    """
    model, cfg = build_model_from_config(config, cfg_options)
    backbone = getattr(model, 'backbone', None)
    deployed = bool(getattr(backbone, 'deploy', False))
    if training_form and deployed:
        raise ValueError(
            'training_form needs the training-form model; the config builds '
            'the backbone in deploy form (model.backbone.deploy=True)'
        )
    load_checkpoint_strict(model, checkpoint)
    model.eval()
    if not training_form and not deployed:
        if not hasattr(backbone, 'switch_to_deploy'):
            raise TypeError(
                f'{type(backbone).__name__} has no switch_to_deploy(); use '
                'training_form=True to export it as it is'
            )
        backbone.switch_to_deploy()
    return model, cfg


@contextlib.contextmanager
def export_rewrites(model: nn.Module):
    """The rewrites of the module docstring, undone on exit: the
    ``'reference'`` backend and static adaptive pools."""
    with use_backend(model, 'reference'), static_adaptive_pools(model):
        yield


def export_to_onnx(
    model: nn.Module,
    inputs: torch.Tensor,
    out: str,
    opset_version: int = 17,
) -> List[str]:
    """Exports ``model``'s task network (:func:`export_wrapper`) to ONNX.

    The TorchScript-based exporter is used (``dynamo=False``): it needs
    only the ``onnx`` package, and the graph has the static shape of
    ``inputs``.

    Args:
        model (nn.Module): A classifier, segmentor or detector in eval mode.
        inputs (Tensor): A preprocessed batch ``(N, 3, H, W)``.
        out (str): Path of the ``.onnx`` file.
        opset_version (int): ONNX opset.

    Returns:
        list[str]: The output names, in the order of the graph outputs.
    """
    task = task_of(model)
    wrapper = export_wrapper(model)
    with export_rewrites(model), torch.no_grad(), warnings.catch_warnings():
        # The graph is static by design: sizes read in Python (mmseg's
        # resize, the pooling bins) become constants, which is what the
        # tracer warns about.
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        num_outputs = len(flatten_tensors(wrapper(inputs)))
        names = output_names(task, num_outputs)
        torch.onnx.export(
            wrapper,
            (inputs,),
            out,
            input_names=['inputs'],
            output_names=names,
            opset_version=opset_version,
            dynamo=False,
            do_constant_folding=True,
        )
    return names


def run_onnxruntime(
    path: str, inputs: torch.Tensor, num_threads: Optional[int] = None
) -> List[torch.Tensor]:
    """Runs an exported file in onnxruntime on the CPU.

    Args:
        path (str): The ``.onnx`` file.
        inputs (Tensor): The batch ``(N, 3, H, W)`` it was exported for.
        num_threads (int, optional): Intra-op threads; onnxruntime's
            default when None.

    Returns:
        list[Tensor]: The outputs, in graph order.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        path, options, providers=['CPUExecutionProvider']
    )
    input_name = session.get_inputs()[0].name
    outputs = session.run(None, {input_name: inputs.numpy()})
    return [torch.from_numpy(np.asarray(array)) for array in outputs]


def torch_outputs(
    model: nn.Module, inputs: torch.Tensor
) -> List[torch.Tensor]:
    """What the exported network computes, run in PyTorch as users run it
    (the model's own backend and ``nn.AdaptiveAvgPool2d``)."""
    with torch.no_grad():
        return flatten_tensors(export_wrapper(model)(inputs))


def default_shape(cfg) -> Tuple[int, int]:
    """The input size to export at when none is given: the data
    preprocessor's ``size`` (segmentation crops) or 224x224."""
    preprocessor = cfg.model.get('data_preprocessor') or {}
    size = preprocessor.get('size') if hasattr(preprocessor, 'get') else None
    if size:
        return (int(size[0]), int(size[1]))
    return (224, 224)


def export_onnx(
    config: str,
    checkpoint: str,
    out: str,
    shape: Optional[Sequence[int]] = None,
    batch_size: int = 1,
    training_form: bool = False,
    verify: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    cfg_options: Optional[dict] = None,
    opset_version: int = 17,
) -> Dict[str, Any]:
    """Loads a trained model and exports it to ONNX (the tool's logic).

    Args:
        config (str): The config the model was trained with.
        checkpoint (str): Its checkpoint, loaded strictly.
        out (str): Path of the ``.onnx`` file.
        shape (Sequence[int], optional): Input ``(H, W)``; by default the
            config's data preprocessor ``size`` or 224x224.
        batch_size (int): Batch size N of the exported graph.
        training_form (bool): Export the unfused branches instead of the
            deploy form.
        verify (bool): Run the file in onnxruntime on a test batch and
            compare with the PyTorch model.
        tolerance (float): Largest relative difference ``verify`` accepts.
        cfg_options (dict, optional): Overrides for the config.
        opset_version (int): ONNX opset.

    Returns:
        dict: ``task``, ``shape`` ``(N, 3, H, W)``, ``outputs`` (name ->
        shape), ``form`` (``'deploy'`` or ``'training'``) and, with
        ``verify``, ``max_abs_diff`` and ``rel_diff``.

    Raises:
        CheckpointMismatchError: If the checkpoint does not fit the model.
        RuntimeError: If ``verify`` finds a relative difference above
            ``tolerance`` (the file is kept for inspection).
    """
    model, cfg = build_export_model(
        config, checkpoint, training_form, cfg_options
    )
    height, width = tuple(shape) if shape else default_shape(cfg)
    inputs = make_test_batch((height, width), batch_size)
    names = export_to_onnx(model, inputs, out, opset_version)
    expected = torch_outputs(model, inputs)
    report = dict(
        task=task_of(model),
        form='training' if training_form else 'deploy',
        shape=tuple(inputs.shape),
        outputs={name: tuple(t.shape) for name, t in zip(names, expected)},
    )
    if verify:
        max_abs, rel = relative_difference(
            expected, run_onnxruntime(out, inputs)
        )
        report.update(max_abs_diff=max_abs, rel_diff=rel)
        if not rel <= tolerance:
            raise RuntimeError(
                f'{out}: onnxruntime differs from PyTorch by {rel:.3e} '
                f'(relative, max abs {max_abs:.3e}) > {tolerance:.1e}'
            )
    return report


def export_program(
    module: nn.Module,
    inputs: torch.Tensor,
    strict: bool = False,
) -> 'torch.export.ExportedProgram':
    """``torch.export.export`` of a backbone or a task network.

    Args:
        module (nn.Module): A deploy-form backbone, or a model (wrapped by
            :func:`export_wrapper`) in eval mode.
        inputs (Tensor): Example batch ``(N, 3, H, W)``; the program has its
            static shape.
        strict (bool): Trace with TorchDynamo (``True``) or by running the
            Python code (``False``, which the backends' capability checks
            need).

    Returns:
        ExportedProgram: ``program.module()(inputs)`` runs it.
    """
    if hasattr(module, 'data_preprocessor') and not isinstance(
        module, (ClassifierLogits, SegmentorLogits, DetectorFeatures)
    ):
        module = export_wrapper(module)
    with torch.no_grad():
        return torch.export.export(module.eval(), (inputs,), strict=strict)
