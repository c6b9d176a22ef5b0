"""Helpers for testing the scripts under tools/ in-process."""

import importlib.util
import os
import textwrap

from .helpers import REPO

#: Where each tool lives under tools/ (OpenMMLab layout).
TOOL_FOLDERS = {
    'train': '',
    'test': '',
    'dist_run': '',
    'dist_train': '',
    'dist_test': '',
    'slurm_train': '',
    'analyze_erf': 'analysis_tools',
    'benchmark': 'analysis_tools',
    'benchmark_cuda': 'analysis_tools',
    'benchmark_onnx': 'analysis_tools',
    'get_flops': 'analysis_tools',
    'sparsity_report': 'analysis_tools',
    'convert_release_checkpoint': 'model_converters',
    'deploy': 'model_converters',
    'export_onnx': 'deployment',
    'demo': 'misc',
    'demo_context': 'misc',
    'make_synthetic_data': 'misc',
    'setup_env': 'misc',
    'download_gpu_wheels': 'misc',
    'gpu_check': 'misc',
}


def tool_path(name, relative=False):
    """Path of a tool from its file name (``'deploy'``, ``'gpu_check.sh'``).

    Args:
        name (str): File name, ``.py`` may be left out.
        relative (bool): Relative to the repository root (as the README
            prints it) instead of absolute.
    """
    stem, ext = os.path.splitext(name)
    if stem not in TOOL_FOLDERS:
        raise KeyError(f'no tool {name!r}; known: {sorted(TOOL_FOLDERS)}')
    path = os.path.join('tools', TOOL_FOLDERS[stem], stem + (ext or '.py'))
    return path if relative else os.path.join(REPO, path)


def load_tool(name):
    """Imports the tool ``name`` (e.g. ``'deploy'``) as a module (its
    ``main(argv)``)."""
    spec = importlib.util.spec_from_file_location(
        f'tool_{name}', tool_path(name)
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_classifier_config(
    path, arch, kernels, small, num_classes=10, width_factor=1.3, **backbone
):
    """Writes an mmpretrain ImageClassifier config with a small SLaK."""
    channels = [int(c * width_factor) for c in arch['channels']]
    extra = ''.join(f', {k}={v!r}' for k, v in backbone.items())
    path.write_text(
        textwrap.dedent(
            f"""
            custom_imports = dict(imports=['slak_mm'])
            default_scope = 'mmpretrain'
            model = dict(
                type='ImageClassifier',
                backbone=dict(
                    type='SLaK', arch={arch!r}, kernel_sizes={kernels!r},
                    small_kernel={small}, width_factor={width_factor},
                    out_indices=3, gap_before_final_norm=True{extra}),
                neck=None,
                head=dict(type='LinearClsHead', num_classes={num_classes},
                          in_channels={channels[-1]}))
            """
        )
    )
    return str(path)
