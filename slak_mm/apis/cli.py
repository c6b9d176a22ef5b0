"""The command lines of ``tools/train.py`` and ``tools/test.py``: the
arguments they share and how they are parsed."""

import argparse
import os

from mmengine.config import DictAction


def make_runner_parser(
    description: str, *positionals: str
) -> argparse.ArgumentParser:
    """The arguments ``tools/train.py`` and ``tools/test.py`` share.

    Args:
        description (str): The tool's description.
        positionals (str): ``'config: help'`` strings, in order.

    Returns:
        ArgumentParser: With the positionals, ``--work-dir`` and
        :func:`add_runner_arguments`.
    """
    parser = argparse.ArgumentParser(description=description)
    for positional in positionals:
        name, _, text = positional.partition(':')
        parser.add_argument(name, help=text.strip())
    parser.add_argument('--work-dir', help='the dir to save logs and outputs')
    add_runner_arguments(parser)
    return parser


def add_runner_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--cfg-options``, ``--launcher`` and ``--local-rank``."""
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value',
    )
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher',
    )
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_runner_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parses the command line and exports LOCAL_RANK for launchers that
    pass it as an argument."""
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args
