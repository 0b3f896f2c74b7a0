"""analyze's view of the forecasts a job offers beyond its selected model (moirai_ft/evaluation/planning.py).

- A job run with blend=true forecasts with its blend: ranked by a test metric, it is ranked by the blend's
  (`test_blend.<metric>`), the forecast a user of that job gets; the table's `blend` column gives the weight
  and the blend's value against its parts.
- "Better than both" means the 95% paired bootstrap interval of the blend's improvement excludes 0 on the
  improving side against the fine-tuned model AND against the zero-shot one (metrics.json `blend_ci`).
- calibrate=conformal: `coverage_80_calibrated` beside the raw coverage.
"""

from __future__ import annotations

import math
from typing import Any

from moirai_ft.analysis.jobs import Job

PARTS = {"vs_fine_tuned": "fine-tuned", "vs_zero_shot": "zero-shot"}


def has_blend(job: Job) -> bool:
    return isinstance(job.metrics.get("test_blend"), dict)


def test_name(metric: str) -> str | None:
    """`wql` for `test.wql`; None for a metric that is not a test metric of the selected model."""
    return metric.split(".", 1)[1] if metric.startswith("test.") else None


def ranks_by_blend(job: Job, metric: str) -> bool:
    name = test_name(metric)
    return name is not None and has_blend(job) and name in job.metrics["test_blend"]


def ranked_value(job: Job, metric: str) -> Any:
    """The value a job is ranked by: its blend's for a test metric when it has a blend, else its own."""
    return job.metrics["test_blend"][test_name(metric)] if ranks_by_blend(job, metric) else job.value(metric)


def blend_metric(job: Job, metric: str) -> str:
    """The metric the blend is judged on: the ranking's test metric, else the one its weight minimised."""
    name = test_name(metric)
    if name is not None and name in (job.metrics.get("test_blend") or {}):
        return name
    return str((job.metrics.get("blend_validation") or {}).get("metric", "wql"))


def better_than(job: Job, name: str) -> dict[str, bool | None]:
    """Per part: True when the blend's improvement interval on `name` lies above 0, False when it does not,
    None without an interval."""
    out: dict[str, bool | None] = {}
    for part in PARTS:
        interval = ((job.metrics.get("blend_ci") or {}).get(part) or {}).get(name)
        ok = isinstance(interval, (list, tuple)) and len(interval) == 2 and all(
            isinstance(v, (int, float)) and math.isfinite(v) for v in interval)
        out[part] = bool(interval[0] > 0) if ok else None
    return out


def better_than_both(job: Job, name: str) -> bool | None:
    verdicts = better_than(job, name).values()
    return None if None in verdicts else all(verdicts)


def blend_cell(job: Job, metric: str) -> str:
    """`w=0.5 wql 0.1676 (+2.0% vs ft, +5.2% vs zs*)`: * where the interval excludes 0."""
    if not has_blend(job):
        return ""
    name = blend_metric(job, metric)
    value = job.metrics["test_blend"].get(name)
    sig = better_than(job, name)
    parts = []
    for part, short in (("vs_fine_tuned", "ft"), ("vs_zero_shot", "zs")):
        rel = ((job.metrics.get("blend_rel_improvement") or {}).get(part) or {}).get(name)
        if isinstance(rel, (int, float)) and math.isfinite(rel):
            parts.append(f"{rel:+.1%} vs {short}{'*' if sig[part] else ''}")
    shown = f"{value:.4g}" if isinstance(value, (int, float)) else "n/a"
    return f"w={job.metrics.get('blend_weight'):g} {name} {shown}" + (f" ({', '.join(parts)})" if parts else "")


def blend_lines(jobs: list[Job], metric: str) -> list[str]:
    """For each job with a blend: its weight, and whether it was significantly better than both parts."""
    lines: list[str] = []
    for rank, job in enumerate(jobs, start=1):
        if not has_blend(job):
            continue
        name = blend_metric(job, metric)
        verdict = better_than_both(job, name)
        sig = better_than(job, name)
        if verdict:
            said = "significantly better than both parts"
        elif verdict is None:
            said = "no interval to judge it by"
        else:
            beaten = [PARTS[p] for p, ok in sig.items() if ok]
            said = ("not significantly better than either part" if not beaten
                    else f"significantly better than the {beaten[0]} model only")
        lines.append(f"- #{rank} {job.value('model')} {job.value('pattern')} lr={job.value('lr')}: blend "
                     f"w={job.metrics.get('blend_weight'):g} on {name}: {said} (95% paired bootstrap over test windows)")
    if lines:
        ranked = test_name(metric) is not None
        head = "Blend (blend=true)" + (f"; jobs with a blend are ranked by test_blend.{test_name(metric)}" if ranked else "")
        lines = ["", head + ":"] + lines
    return lines
