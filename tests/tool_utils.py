"""Helpers for testing the scripts under tools/ in-process."""

import importlib.util
import os
import textwrap

TOOLS_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'tools')


def load_tool(name):
    """Imports ``tools/<name>.py`` as a module (its ``main(argv)``)."""
    path = os.path.join(TOOLS_DIR, f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'tool_{name}', path)
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
