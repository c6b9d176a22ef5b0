"""Per-layer density of a checkpoint: text table, CSV and bar chart PNG.

Example:
    python tools/analysis_tools/sparsity_report.py work_dirs/x/epoch_300.pth \
        --out-dir work_dirs/x/sparsity
    python tools/analysis_tools/sparsity_report.py \
        SLaK_tiny_checkpoint.pth   # release file

Reads ``state_dict`` (OpenMMLab) or ``model`` (release) unless
``--state-key`` names another entry (e.g. ``model_ema``).

Two totals are printed: the masked set (the 2-D/4-D weights under
``--module-path``, by default the module the checkpoint's
``SparseTrainingHook`` state names, else ``backbone`` when the file has
``backbone.`` keys, else the whole model; this is the ``sparse/density``
the hook logs) and the whole model (every 2-D/4-D weight, dense heads
included). With the hook's saved masks the masked-set density is also
given as the masks count it (weights regrown at the last update are still
zero in the file). The masked set's density per group (``stem``,
``stage<i>``, else the top-level module) uses the grouping the hook logs
and ``get_flops`` reports.
"""

import argparse
import csv
import os

from slak_mm.analysis.sparsity import (
    default_module_path,
    format_table,
    layer_densities,
    mask_density,
    overall_density,
    plot_densities,
    select_rows,
    stage_densities,
)
from slak_mm.models.checkpoint import extract_state_dict
from slak_mm.sparse import CHECKPOINT_KEY
from slak_mm.utils import safe_torch_load

#: Checkpoint entry where SparseTrainingHook keeps its masks.
SPARSE_STATE_KEY = CHECKPOINT_KEY


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Per-layer density of a checkpoint.'
    )
    parser.add_argument('checkpoint')
    parser.add_argument('--state-key', help='checkpoint entry to read')
    parser.add_argument(
        '--module-path',
        help='module whose 2-D/4-D weights form the masked set, as in '
        "SparseTrainingHook's module_path ('' = whole model); default: the "
        "hook state's module_path, else 'backbone' when the file has "
        "'backbone.' keys, else the whole model",
    )
    parser.add_argument(
        '--out-dir', help='write density.csv and density.png here'
    )
    return parser.parse_args(argv)


def describe(module_path):
    return module_path if module_path else 'the whole model'


def main(argv=None):
    args = parse_args(argv)
    checkpoint = safe_torch_load(args.checkpoint)
    state_dict = extract_state_dict(
        checkpoint, args.checkpoint, args.state_key
    )
    sparse_state = checkpoint.get(SPARSE_STATE_KEY)
    if not isinstance(sparse_state, dict):
        sparse_state = None
    if args.module_path is not None:
        module_path = args.module_path
    else:
        module_path = default_module_path(state_dict, sparse_state)
    rows = layer_densities(state_dict)
    masked = select_rows(rows, module_path)
    if not masked:
        raise SystemExit(
            f'{args.checkpoint}: no 2-D/4-D weights under '
            f"{module_path!r}; pass --module-path ('' = whole model)"
        )
    subset = len(masked) < len(rows)
    print(
        format_table(rows, masked={r.name for r in masked} if subset else None)
    )
    density = overall_density(masked)
    print(
        f'Masked set ({describe(module_path)}, {len(masked)} layers'
        + (', marked *' if subset else '')
        + f'): density {density:.4f} (sparsity {1 - density:.4f})'
    )
    by_stage = stage_densities(masked)
    print(
        '  per group: '
        + ', '.join(
            f'{group} {value:.4f}' for group, value in by_stage.items()
        )
    )
    if sparse_state is not None and 'masks' in sparse_state:
        saved_path = sparse_state.get('module_path', '') or ''
        if saved_path == module_path:
            from_masks = mask_density(
                masked, sparse_state['masks'], saved_path
            )
            print(
                f'  by the saved {SPARSE_STATE_KEY} masks: density '
                f'{from_masks:.4f} (what SparseTrainingHook logs)'
            )
    whole = overall_density(rows)
    print(
        f'Whole model ({len(rows)} layers): density {whole:.4f} '
        f'(sparsity {1 - whole:.4f})'
    )
    if args.out_dir:
        masked_names = {r.name for r in masked}
        os.makedirs(args.out_dir, exist_ok=True)
        with open(os.path.join(args.out_dir, 'density.csv'), 'w') as f:
            writer = csv.writer(f)
            writer.writerow(
                ['layer', 'shape', 'numel', 'nonzero', 'density', 'masked']
            )
            for r in rows:
                writer.writerow(
                    [
                        r.name,
                        'x'.join(map(str, r.shape)),
                        r.numel,
                        r.nonzero,
                        f'{r.density:.6f}',
                        int(r.name in masked_names),
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
