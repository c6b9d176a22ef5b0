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

from slak_mm.analysis.sparsity import checkpoint_density


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


def main(argv=None):
    args = parse_args(argv)
    try:
        report = checkpoint_density(
            args.checkpoint, args.state_key, args.module_path
        )
    except ValueError as error:
        raise SystemExit(str(error)) from None
    print(report.summary())
    if args.out_dir:
        report.save(args.out_dir)
        print(f'Saved density.csv and density.png to {args.out_dir}')
    return report.rows


if __name__ == '__main__':
    main()
