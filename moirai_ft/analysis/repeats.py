"""analyze.py's view of a search (issue #13): lr-finder suggestions per model and pattern, and seed
repeats (`-m seed=0,1,2`) aggregated into mean ± std per configuration. Torch-free, like all of analysis/."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from moirai_ft.analysis.jobs import Job, State, lr_find_note
from moirai_ft.config.root import RUN_KEYS

SEED_KEYS = ("seed",)  # what differs between repeats of one configuration (eval.seed follows seed)
NOT_CONFIG = RUN_KEYS + ("prune",)  # how a job ran (and whether the sweep pruned it), not what it trained


def _config_key(job: Job) -> str | None:
    """The job's resolved config without its seeds: repeats of a configuration share it."""
    if not job.config:
        return None
    config = {k: v for k, v in job.config.items() if k not in SEED_KEYS + NOT_CONFIG}
    if isinstance(config.get("eval"), dict):
        config["eval"] = {k: v for k, v in config["eval"].items() if k != "seed"}
    return json.dumps(config, sort_keys=True, default=str)


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def seed_aggregates(jobs: list[Job], metrics: list[str]) -> pd.DataFrame:
    """One row per configuration run with more than one seed: n, seeds, and mean/std of each metric
    (std with n - 1: the spread of a repeat). Jobs with a result only (completed, pruned)."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        key = _config_key(job)
        if key is not None and job.state.value in ("completed", "pruned"):
            groups.setdefault(key, []).append(job)
    rows = []
    for members in groups.values():
        seeds = sorted({m.config.get("seed") for m in members}, key=str)
        if len(seeds) < 2:
            continue
        first = members[0]
        row: dict[str, Any] = {"model": first.value("model"), "pattern": first.value("pattern"), "lr": first.value("lr"),
                               "n": len(members), "seeds": ",".join(map(str, seeds))}
        for metric in metrics:
            values = [v for v in (_number(m.value(metric)) for m in members) if v is not None]
            series = pd.Series(values, dtype=float)
            row[f"{metric} mean"] = series.mean() if values else math.nan
            row[f"{metric} std"] = series.std(ddof=1) if len(values) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def search_lines(jobs: list[Job], metric: str) -> list[str]:
    """The lr finder's suggestions and the seed aggregates, as printed and in summary.md."""
    lines: list[str] = []
    finds = [j for j in jobs if j.state == State.lr_find]
    if finds:
        lines += ["", "lr finder (lr_find=true), per model and pattern:"]
        for j in sorted(finds, key=lambda j: (str(j.value("model")), str(j.value("pattern")))):
            lines.append(f"- model={j.value('model')} pattern={j.value('pattern')}: {lr_find_note(j.metrics)}")
    test_metrics = sorted({f"test.{k}" for j in jobs for k in (j.metrics.get("test") or {})})
    table = seed_aggregates(jobs, [metric] + [m for m in test_metrics if m != metric])
    if not table.empty:
        lines += ["", "Seed repeats (mean ± std over seeds, per configuration):"]
        for row in table.to_dict("records"):
            cells = [f"{m.removesuffix(' mean')} {row[m]:.4g} ± {row[m.removesuffix(' mean') + ' std']:.2g}"
                     for m in row if m.endswith(" mean") and _number(row[m]) is not None]
            lines.append(f"- model={row['model']} pattern={row['pattern']} lr={row['lr']} "
                         f"(n={row['n']}, seeds {row['seeds']}): " + ", ".join(cells))
    return lines
