"""slak_mm.utils.cli: the one parser of sizes for every tool."""

import argparse
import os.path as osp
import subprocess
import sys
import textwrap

import pytest
from mmengine.config import Config

from slak_mm.utils.cli import (
    add_benchmark_arguments,
    add_size_pair_argument,
    parse_checked,
    size_batch_pairs,
    size_pair,
)

from .helpers import REPO
from .tool_utils import load_tool


def shape_parser(**kwargs):
    parser = argparse.ArgumentParser()
    add_size_pair_argument(parser, **kwargs)
    return parser


def test_size_pair_square_and_rectangle():
    parser = shape_parser()
    assert parser.parse_args([]).shape == (224, 224)
    assert parser.parse_args(['--shape', '64']).shape == (64, 64)
    assert parser.parse_args(['--shape', '48', '64']).shape == (48, 64)
    assert size_pair([7]) == (7, 7)


@pytest.mark.parametrize('values', [['1', '2', '3'], ['0'], ['-4', '8']])
def test_size_pair_rejects_bad_values(values, capsys):
    with pytest.raises(SystemExit) as exited:
        shape_parser(name='--input-size').parse_args(['--input-size', *values])
    assert exited.value.code == 2
    assert '--input-size' in capsys.readouterr().err


def test_size_batch_pairs():
    assert size_batch_pairs([224, 512], [4, 1]) == [(224, 4), (512, 1)]
    with pytest.raises(ValueError, match='one batch size per input size'):
        size_batch_pairs([224, 512], [4])
    with pytest.raises(ValueError, match='must be positive'):
        size_batch_pairs([224], [0])


def test_parse_checked_makes_a_mismatch_a_usage_error(capsys):
    parser = argparse.ArgumentParser()
    add_benchmark_arguments(
        parser, [224, 512], [4, 1], 2, 5, 'cpu', 'o.json', ('a', 'b')
    )
    args = parse_checked(parser, [])
    assert (args.sizes, args.batches) == ([224, 512], [4, 1])
    assert (args.warmup, args.repeats, args.device) == (2, 5, 'cpu')
    assert args.out == 'o.json' and args.models == ['a', 'b']
    with pytest.raises(SystemExit) as exited:
        parse_checked(parser, ['--sizes', '64', '--batches', '1', '2'])
    assert exited.value.code == 2
    assert 'sizes [64] and batches [1, 2]' in capsys.readouterr().err


@pytest.mark.parametrize(
    'tool, argv, attribute',
    [
        ('get_flops', ['c.py', '--shape', '32'], 'shape'),
        ('deploy', ['c.py', 'a.pth', 'b.pth', '--shape', '32'], 'shape'),
        (
            'export_onnx',
            ['c.py', 'a.pth', '--out', 'm.onnx', '--shape', '32'],
            'shape',
        ),
        ('benchmark_onnx', ['c.py', '--shape', '32'], 'shape'),
        (
            'analyze_erf',
            ['c.py', 'images', '--input-size', '32'],
            'input_size',
        ),
        (
            'make_synthetic_data',
            ['ade20k', '--image-size', '32'],
            'image_size',
        ),
    ],
)
def test_every_tool_parses_sizes_alike(tool, argv, attribute):
    module = load_tool(tool)
    assert getattr(module.parse_args(argv), attribute) == (32, 32)
    rectangle = [*argv[:-1], '32', '48']
    assert getattr(module.parse_args(rectangle), attribute) == (32, 48)
    with pytest.raises(SystemExit):
        module.parse_args([*argv[:-1], '1', '2', '3'])


@pytest.mark.parametrize('tool', ['benchmark', 'benchmark_cuda'])
def test_benchmarks_share_sizes_and_batches(tool):
    module = load_tool(tool)
    args = module.parse_args(['--sizes', '64', '96', '--batches', '2', '1'])
    assert (args.sizes, args.batches) == ([64, 96], [2, 1])
    with pytest.raises(SystemExit):
        module.parse_args(['--sizes', '64', '96', '--batches', '2'])


def test_cli_and_cuda_benchmark_import_without_the_toolkits():
    """The GPU machine has torch and mmengine only: the CUDA benchmark
    tool, its library and the argument parsers import there."""
    code = textwrap.dedent(f"""
        import importlib.abc, importlib.util, sys

        BLOCKED = ('mmcv', 'mmdet', 'mmseg', 'mmpretrain')

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in BLOCKED:
                    raise ImportError(f'{{name}} is blocked')
                return None

        sys.meta_path.insert(0, Block())
        try:
            import mmpretrain
        except ImportError:
            pass
        else:
            raise SystemExit('the block does not work')
        import slak_mm.utils.cli
        import slak_mm.analysis.timing
        import slak_mm.analysis.cuda_benchmark
        spec = importlib.util.spec_from_file_location(
            'benchmark_cuda',
            {REPO!r} + '/tools/analysis_tools/benchmark_cuda.py')
        tool = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tool)
        print(tool.parse_args(['--sizes', '64', '--batches', '2']).sizes)
    """)
    result = subprocess.run(
        [sys.executable, '-c', code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == '[64]'


def test_quick_demo_refuses_iters_inside_the_warm_up(monkeypatch, capsys):
    demo = load_tool('demo')
    warm_up = Config.fromfile(demo.CONFIG).param_scheduler[0]
    assert warm_up['end'] == 30  # the bound below is the config's value
    monkeypatch.setattr(sys, 'argv', ['demo.py', '--iters', '30'])
    with pytest.raises(SystemExit) as exit_info:
        demo.parse_args()
    assert exit_info.value.code == 2
    assert 'must be more than 30' in capsys.readouterr().err
    monkeypatch.setattr(sys, 'argv', ['demo.py', '--iters', '31'])
    assert demo.parse_args().iters == 31


def test_demo_commands_name_the_checkouts_scripts(tmp_path):
    from slak_mm.apis import tool_runs

    command = tool_runs.train_command('c.py', 'w', ['a=1'])
    assert command[1] == osp.join(REPO, 'tools', 'train.py')
    assert command[2:] == ['c.py', '--work-dir', 'w', '--cfg-options', 'a=1']
    command = tool_runs.test_command('c.py', 'x.pth', 'w')
    assert command[1] == osp.join(REPO, 'tools', 'test.py')
    # An installed package has no tools/: the error names what is missing.
    missing = osp.join(str(tmp_path), 'tools', 'train.py')
    with pytest.raises(FileNotFoundError, match='source checkout') as error:
        tool_runs.tool_script('train.py', str(tmp_path))
    assert missing in str(error.value)
