"""What a sweep found, and what to run next: `python analyze.py multirun/` (or one sweep's directory).

Prints one table of every job below PATH (best first), writes it as summary.csv / summary.md /
summary.json (into PATH, or --out), draws plots/learning_curves.png, plots/lr_pattern_heatmap.png and
plots/params_vs_metric.png (trainable parameters against the ranking metric),
diagnoses each job with the seed plan's section 7 rules (next overrides in Hydra syntax), recommends the
best configuration per model, and from a finished small stage prints the base-stage command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from moirai_ft.analysis.report import advice_lines, analyze, printable, write_summary
from moirai_ft.analysis.table import higher_is_better
from moirai_ft.errors import UserError
from moirai_ft.analysis.plots import HEATMAP, LEARNING_CURVES, heatmap, learning_curves
from moirai_ft.analysis.params_plot import PARAMS_VS_METRIC, params_vs_metric


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a sweep directory, or a root above several (multirun/)")
    parser.add_argument("--out", type=Path, default=None, help="where the summary files and plots/ go (default: PATH)")
    parser.add_argument("--metric", default=None,
                        help="what ranks jobs and fills the heatmap: best_monitored (default: the value monitor= selected "
                             "on), best_val_loss, or a test metric such as test.mase")
    args = parser.parse_args(argv)
    try:
        report = analyze(args.path, args.metric)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or (args.path if args.path.is_dir() else args.path.parent)
    print(printable(report))  # 120 columns; every figure is in summary.csv / summary.md
    print()
    print("\n".join(advice_lines(report)))
    written = write_summary(report, out)
    written.append(learning_curves(report.jobs, out / "plots" / LEARNING_CURVES))
    written.append(heatmap(report.jobs, report.metric, higher_is_better(report.metric), out / "plots" / HEATMAP))
    written.append(params_vs_metric(report.jobs, report.metric, higher_is_better(report.metric),
                                    out / "plots" / PARAMS_VS_METRIC))
    print("\nwrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
