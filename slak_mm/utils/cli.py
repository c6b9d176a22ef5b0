"""Command-line arguments shared by the scripts under ``tools/``.

Only ``argparse`` is imported here, so the benchmarks can use it on a
machine that has torch and mmengine but none of mmcv, mmdet, mmseg or
mmpretrain.
"""

import argparse
from typing import List, Sequence, Tuple


class _SizePairAction(argparse.Action):
    """Stores one or two positive integers as a pair: ``N`` -> ``(N, N)``."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            pair = size_pair(values, option_string)
        except ValueError as error:
            parser.error(str(error))
        setattr(namespace, self.dest, pair)


def size_pair(values: Sequence[int], name: str = '--shape') -> Tuple[int, int]:
    """``[N]`` -> ``(N, N)``; ``[A, B]`` -> ``(A, B)``.

    Args:
        values (Sequence[int]): What the option received.
        name (str): The option, for the message.

    Raises:
        ValueError: For no value, more than two, or one that is not
            positive.
    """
    values = list(values)
    if len(values) not in (1, 2):
        raise ValueError(f'{name} takes one or two sizes, got {values}')
    if any(v <= 0 for v in values):
        raise ValueError(f'{name} sizes must be positive, got {values}')
    return (values[0], values[-1])


def add_size_pair_argument(
    parser: argparse.ArgumentParser,
    name: str = '--shape',
    default: int = 224,
    names: Tuple[str, str] = ('H', 'W'),
    help: str = 'input size',
) -> None:
    """Adds an option taking ``N`` (square) or two sizes, parsed to a pair.

    The parsed value is always a tuple of two ints, in the order the user
    gives them (``names`` says which order that is, e.g. ``('H', 'W')``).

    Args:
        parser (ArgumentParser): The tool's parser.
        name (str): The option, e.g. ``'--shape'`` or ``'--input-size'``.
        default (int): Side of the square default.
        names (tuple[str, str]): What the two values are, for the help.
        help (str): What the size is for.
    """
    first, second = names
    parser.add_argument(
        name,
        type=int,
        nargs='+',
        default=(default, default),
        action=_SizePairAction,
        metavar='SIZE',
        help=f'{help}: {first} (square) or {first} {second} '
        f'(default: {default})',
    )


def add_benchmark_arguments(
    parser: argparse.ArgumentParser,
    sizes: Sequence[int],
    batches: Sequence[int],
    warmup: int,
    repeats: int,
    device: str,
    out: str,
    models: Sequence[str],
) -> None:
    """Adds the benchmarks' shared options: ``--sizes`` and ``--batches``
    (one batch size per size; check them with :func:`parse_checked`),
    ``--warmup``, ``--repeats``, ``--device``, ``--out`` (the JSON
    report) and ``--models`` (any of ``models``, all by default), with the
    given defaults."""
    parser.add_argument(
        '--sizes',
        type=int,
        nargs='+',
        default=list(sizes),
        help='square input sizes',
    )
    parser.add_argument(
        '--batches',
        type=int,
        nargs='+',
        default=list(batches),
        help='one batch size per entry of --sizes',
    )
    parser.add_argument(
        '--warmup', type=int, default=warmup, help='untimed rounds first'
    )
    parser.add_argument(
        '--repeats', type=int, default=repeats, help='timed rounds (median)'
    )
    parser.add_argument('--device', default=device)
    parser.add_argument(
        '--out', default=out, help='where to write the JSON report'
    )
    parser.add_argument(
        '--models', nargs='+', default=list(models), choices=list(models)
    )


def size_batch_pairs(
    sizes: Sequence[int], batches: Sequence[int]
) -> List[Tuple[int, int]]:
    """Pairs every input size with its batch size.

    Raises:
        ValueError: If the counts differ (``zip`` would silently drop the
            extra ones) or a value is not positive.
    """
    if len(sizes) != len(batches):
        raise ValueError(
            f'give one batch size per input size, got sizes {list(sizes)} '
            f'and batches {list(batches)}'
        )
    if any(v <= 0 for v in [*sizes, *batches]):
        raise ValueError(
            f'sizes and batches must be positive, got sizes {list(sizes)} '
            f'and batches {list(batches)}'
        )
    return list(zip(sizes, batches))


def parse_checked(
    parser: argparse.ArgumentParser, argv=None
) -> argparse.Namespace:
    """Parses ``argv``; when the parser has ``--sizes`` / ``--batches``,
    a mismatch is a usage error (exit status 2) naming both."""
    args = parser.parse_args(argv)
    if hasattr(args, 'sizes') and hasattr(args, 'batches'):
        try:
            size_batch_pairs(args.sizes, args.batches)
        except ValueError as error:
            parser.error(str(error))
    return args
