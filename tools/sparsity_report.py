"""Per-layer density of a checkpoint: text table, CSV and bar chart PNG.

Example:
    python tools/sparsity_report.py work_dirs/x/epoch_300.pth \
        --out-dir work_dirs/x/sparsity
    python tools/sparsity_report.py SLaK_tiny_checkpoint.pth   # release file

Reads ``state_dict`` (OpenMMLab) or ``model`` (release) unless
``--state-key`` names another entry (e.g. ``model_ema``).
"""

import argparse
import csv
import os

from slak_mm.analysis.sparsity import (
    format_table,
    layer_densities,
    overall_density,
    plot_densities,
)
from slak_mm.models.checkpoint import extract_state_dict
from slak_mm.utils import safe_torch_load


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Per-layer density of a checkpoint.'
    )
    parser.add_argument('checkpoint')
    parser.add_argument('--state-key', help='checkpoint entry to read')
    parser.add_argument(
        '--out-dir', help='write density.csv and density.png here'
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    checkpoint = safe_torch_load(args.checkpoint)
    state_dict = extract_state_dict(
        checkpoint, args.checkpoint, args.state_key
    )
    rows = layer_densities(state_dict)
    print(format_table(rows))
    print(
        f'{len(rows)} layers, overall density {overall_density(rows):.4f} '
        f'(sparsity {1 - overall_density(rows):.4f})'
    )
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
        with open(os.path.join(args.out_dir, 'density.csv'), 'w') as f:
            writer = csv.writer(f)
            writer.writerow(['layer', 'shape', 'numel', 'nonzero', 'density'])
            for r in rows:
                writer.writerow(
                    [
                        r.name,
                        'x'.join(map(str, r.shape)),
                        r.numel,
                        r.nonzero,
                        f'{r.density:.6f}',
                    ]
                )
        plot_densities(
            rows,
            os.path.join(args.out_dir, 'density.png'),
            os.path.basename(args.checkpoint),
        )
        print(f'Saved density.csv and density.png to {args.out_dir}')
    return rows


if __name__ == '__main__':
    main()
