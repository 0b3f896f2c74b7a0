"""The table `analyze.py` prints and writes: one row per job, results first and best first by the chosen
metric, each test metric beside its improvement over zero-shot and whether that improvement is significant."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from moirai_ft.analysis.blend import ranked_value
from moirai_ft.analysis.jobs import NESTED_METRICS, STATE_ORDER, Job, State
from moirai_ft.evaluation.coverage import BANDS, nominal
from moirai_ft.evaluation.bootstrap import significant

ROW_COLUMNS = (
    "job", "model", "family", "pattern", "lr", "scheduler", "state", "best_val_loss", "best_epoch", "epochs_run",
    "stop_reason", "zero_shot_val_loss",
)
TAIL_COLUMNS = ("wall_s", "train_samples_per_s", "error")


def metric_columns(jobs: list[Job]) -> list[str]:
    """test.*, zero_shot_test.*, rel_improvement.* present in any job, in a stable order."""
    cols: list[str] = []
    for group in NESTED_METRICS:
        names = sorted({n for j in jobs for n in (j.metrics.get(group) or {}) if isinstance(j.metrics.get(group), dict)})
        cols += [f"{group}.{n}" for n in names]
    return cols


def higher_is_better(metric: str) -> bool:
    return metric.startswith("rel_improvement.")


def sort_jobs(jobs: list[Job], metric: str) -> list[Job]:
    """Results first (completed and diverged: a diverged job keeps its best weights), best metric
    first, no value last; then the rest by state: running, unfinished, failed, unreadable. A job with a
    blend is ranked by its blend's test metric (analysis/blend.py); a coverage by its distance to nominal."""
    sign = -1.0 if higher_is_better(metric) else 1.0
    band = metric.rsplit(".", 1)[-1]

    def number(job: Job) -> float:
        value = ranked_value(job, metric)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and band in BANDS:
            return abs(float(value) - nominal(band))
        return sign * float(value) if ok else math.inf

    results = [j for j in jobs if j.state in (State.completed, State.pruned, State.diverged)]
    rest = [j for j in jobs if j not in results]
    return (sorted(results, key=lambda j: (number(j), str(j.path)))
            + sorted(rest, key=lambda j: (STATE_ORDER.index(j.state), str(j.path))))


def significance_columns(jobs: list[Job]) -> list[str]:
    """significant.<metric> for the test metrics with a bootstrap interval in any job."""
    names = sorted({n for j in jobs for n in (j.metrics.get("rel_improvement_ci") or {})})
    return [f"significant.{n}" for n in names]


def table(jobs: list[Job], root: Path) -> pd.DataFrame:
    sig_cols = significance_columns(jobs)
    cols = list(ROW_COLUMNS) + metric_columns(jobs) + sig_cols + list(TAIL_COLUMNS)
    rows = []
    for job in jobs:
        row: dict[str, Any] = {c: job.value(c) for c in cols if c not in sig_cols}
        # True/False: the 95% interval of the improvement excludes/includes 0 (moirai_ft/evaluation/bootstrap.py)
        row.update({c: significant((job.metrics.get("rel_improvement_ci") or {}).get(c.split(".", 1)[1]))
                    for c in sig_cols})
        row["job"] = rel_path(job.path, root)
        row["state"] = job.state.value
        row["error"] = job.metrics.get("error") or job.note or None
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def rel_path(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root.resolve())) or "."
    except ValueError:
        return str(path)


def fmt_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    cols = [c for c in frame.columns if frame[c].notna().any()]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt_cell(v) for v in row) + " |" for row in frame[cols].itertuples(index=False)]
    return "\n".join(lines)
