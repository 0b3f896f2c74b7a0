"""The table `analyze.py` prints and writes: one row per job, results first and best first by the chosen
metric, each test metric beside its improvement over zero-shot and whether that improvement is significant."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from moirai_ft.analysis.blend import blend_cell, has_blend, ranked_value, ranks_by_blend
from moirai_ft.analysis.diagnose import judged_metric
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
        bands = [n for n in names if n in BANDS]  # each band's coverage right after wql: read side by side
        rest = [n for n in names if n not in bands]
        at = rest.index("wql") + 1 if "wql" in rest else len(rest)
        cols += [f"{group}.{n}" for n in rest[:at] + bands + rest[at:]]
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


def table(jobs: list[Job], root: Path, metric: str | None = None) -> pd.DataFrame:
    """summary.csv / summary.md: every figure of every job (`metric`: the ranking, for the blend column)."""
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
        row["blend"] = blend_cell(job, metric) if metric else ""  # blend=true: its weight, value against its parts
        rows.append(row)
    blends = ["blend"] if any(has_blend(j) for j in jobs) else []
    return pd.DataFrame(rows, columns=cols[:-len(TAIL_COLUMNS)] + blends + cols[-len(TAIL_COLUMNS):])


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


# --- the terminal's table: what a glance needs, in `TERMINAL_WIDTH` columns (the rest: summary.csv/.md) ---

TERMINAL_WIDTH = 120
# ranking metric -> (its zero-shot value's key, what its gain is called)
_ZERO_SHOT = {"best_monitored": "zero_shot_monitored", "best_val_loss": "zero_shot_val_loss"}


def _gain(job: Job, metric: str) -> float | None:
    """The job's improvement over zero-shot on the ranking metric (positive = better)."""
    def number(key: str) -> float | None:
        v = job.value(key)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        return float(v) if ok else None

    if ranks_by_blend(job, metric):  # ranked by its blend: the blend's gain over the zero-shot model
        rel = ((job.metrics.get("blend_rel_improvement") or {}).get("vs_zero_shot") or {}).get(metric.split(".", 1)[1])
        return float(rel) if isinstance(rel, (int, float)) and math.isfinite(rel) else None
    if metric.startswith(("test.", "rel_improvement.")):
        return number("rel_improvement." + metric.split(".", 1)[1])
    best, zero = number(metric), number(_ZERO_SHOT.get(metric, ""))
    return (zero - best) / abs(zero) if best is not None and zero else None


def _pct(value: float | None, interval: Any = None) -> str:
    if value is None:
        return ""
    mark = {False: " n.s.", True: ""}.get(significant(interval), "")  # n.s.: its 95% interval includes 0
    return f"{value:+.1%}{mark}"


def _labels(jobs: list[Job], root: Path) -> list[str]:
    """Each job by its directory's name (a sweep names it by its overrides); the path below root when
    names repeat across sweeps."""
    names = [j.path.name for j in jobs]
    return names if len(set(names)) == len(names) else [rel_path(j.path, root) for j in jobs]


def terminal_frame(jobs: list[Job], metric: str, root: Path) -> pd.DataFrame:
    """Rank, job, state, the ranking metric with its gain over zero-shot, the gain of the test metric that
    judges it with its significance, and wall time."""
    monitors = [str(j.value("monitor") or "val_nll") for j in jobs]
    monitor = max(set(monitors), key=monitors.count) if monitors else "val_nll"  # one sweep: one monitor
    label = monitor if metric == "best_monitored" and len(set(monitors)) == 1 else metric
    registry = next((j.config["monitors"] for j in jobs if j.config.get("monitors")), None)  # one sweep: one registry
    judged = judged_metric(metric, monitor, registry)  # one test column for the whole table
    by_test = metric.startswith(("test.", "rel_improvement."))
    rows = []
    for rank, (job, name) in enumerate(zip(jobs, _labels(jobs, root)), start=1):
        ci = (job.metrics.get("rel_improvement_ci") or {}).get(judged)
        if ranks_by_blend(job, metric):  # the blend's interval against the zero-shot model
            ci = ((job.metrics.get("blend_ci") or {}).get("vs_zero_shot") or {}).get(judged)
        row = {"#": rank, "job": name, "state": job.state.value, label: fmt_cell(ranked_value(job, metric)),
               "vs zero-shot": _pct(_gain(job, metric), ci if by_test else None)}
        if not by_test:
            rel = job.value(f"rel_improvement.{judged}")
            row[f"test {judged}"] = _pct(rel if isinstance(rel, (int, float)) else None, ci)
        wall = job.value("wall_s")
        row["wall"] = f"{wall:.0f}s" if isinstance(wall, (int, float)) and math.isfinite(wall) else ""
        rows.append(row)
    return pd.DataFrame(rows)


def render(frame: pd.DataFrame, width: int = TERMINAL_WIDTH) -> str:
    """The frame as text lines of at most `width` characters: the job column takes what the others leave,
    long names cut at the front (their end, the overrides, tells jobs apart)."""
    cells = {c: [str(v) for v in frame[c]] for c in frame.columns}
    widths = {c: max([len(c), *map(len, cells[c])]) for c in frame.columns}
    room = width - sum(w for c, w in widths.items() if c != "job") - 2 * (len(widths) - 1)
    widths["job"] = max(min(widths.get("job", 0), room), 8)
    cut = lambda s, w: s if len(s) <= w else "…" + s[len(s) - w + 1:]  # noqa: E731
    left = {"job", "state"}
    lines = []
    for i in range(-1, len(frame)):
        parts = []
        for c in frame.columns:
            text = cut(c if i < 0 else cells[c][i], widths[c])
            parts.append(text.ljust(widths[c]) if c in left else text.rjust(widths[c]))
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)
