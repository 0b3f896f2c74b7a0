"""Everything `python analyze.py PATH` reports: the job directories below PATH with their state (jobs.py),
one table (table.py; printed, and written as summary.csv / summary.md / summary.json), the section 7
diagnosis of each job, the best configuration per model and overall, and, from a finished small stage,
the base-stage command (recommend.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from moirai_ft.analysis.blend import blend_lines, ranked_value, ranks_by_blend
from moirai_ft.analysis.budget import SweepBudget, budget_lines, sweep_budgets
from moirai_ft.analysis.jobs import Job, State, find_job_dirs, read_job
from moirai_ft.analysis.recommend import base_stage_command, best_by_model
from moirai_ft.analysis.repeats import search_lines
from moirai_ft.analysis.table import markdown_table, metric_columns, rel_path, render, sort_jobs, table, terminal_frame
from moirai_ft.artifacts import write_json_atomic
from moirai_ft.errors import UserError

SUMMARY = "summary"  # summary.csv, summary.md, summary.json


@dataclass
class Report:
    root: Path
    metric: str
    jobs: list[Job]
    frame: pd.DataFrame
    best: dict[str, Job]
    next_stage: tuple[str | None, str]
    budgets: list[SweepBudget] = field(default_factory=list)  # budget=: each budgeted sweep below root


def analyze(root: Path, metric: str | None = None) -> Report:
    """metric None: best_monitored, the value each job's `monitor=` selected on and the sweeper minimised
    (best_val_loss for jobs from before the monitor)."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"{root} does not exist; give analyze.py a sweep directory or a root above several (multirun/)")
    dirs = find_job_dirs(root)
    if not dirs:
        raise UserError(f"no job directories below {root}; point analyze.py at multirun/ or one sweep's directory")
    jobs = [read_job(d, metric or "best_monitored") for d in dirs]
    # best_monitored: the value `monitor=` selected on (val_nll, val_crps, val_mae), what the sweeper minimised
    monitored = ["best_monitored"] if any("best_monitored" in j.metrics for j in jobs) else []
    metric = metric or (monitored or ["best_val_loss"])[0]
    allowed = ["best_val_loss", "zero_shot_val_loss"] + monitored + metric_columns(jobs)
    if metric not in allowed:
        raise UserError(f"--metric {metric} is not in these jobs; use one of: {', '.join(allowed)}")
    jobs = sort_jobs(jobs, metric)
    return Report(root, metric, jobs, table(jobs, root, metric), best_by_model(jobs, metric), base_stage_command(jobs, metric),
                  sweep_budgets(root))


def printable(report: Report) -> str:
    """The table as printed: rank, job, state, the ranking metric with its gain over zero-shot and the
    significance of the test gain that judges it, wall time; in 120 columns. Every other figure is in
    summary.csv / summary.md."""
    return render(terminal_frame(report.jobs, report.metric, report.root))


def advice_lines(report: Report) -> list[str]:
    """Diagnosis, recommendations and the next stage, as printed and as in summary.md."""
    lines = ["Diagnosis (the seed's section 7 rules):"]
    for rank, job in enumerate(report.jobs, start=1):
        name = f"#{rank} {job.value('model')} {job.value('pattern')} lr={job.value('lr')}"
        if job.state == State.failed:
            lines.append(f"- {name}: FAILED: {job.metrics.get('error')}; fix it and rerun the sweep (completed jobs are skipped)")
        elif job.state in (State.running, State.unfinished, State.not_started, State.unreadable, State.damaged):
            lines.append(f"- {name}: {job.state.value.upper()}{': ' + job.note if job.note else ''}")
        elif not job.findings or job.metrics.get("test_error"):
            lines.append(f"- {name}: {job.note or 'healthy, no rule fired'}")
        for finding in job.findings:
            lines.append(f"- {name}: {finding.rule.value}: {finding.message}")
            lines += [f"    next: {command}" for command in job.next_commands(finding)]
    lines.append("")
    lines.append(f"Best by {report.metric}:")
    for model, job in report.best.items():
        whose = " (its blend)" if ranks_by_blend(job, report.metric) else ""
        lines.append(f"- {model}: {ranked_value(job, report.metric):.4g}{whose} {rel_path(job.path, report.root)}")
        lines.append(f"    {job.command()}")
    if report.best:  # jobs are sorted best first: the first per-model winner is the overall one
        overall = next(j for j in report.jobs if any(j is b for b in report.best.values()))
        lines.append(f"- overall: model={overall.value('model')} pattern={overall.value('pattern')} "
                     f"lr={overall.value('lr')} ({rel_path(overall.path, report.root)})")
    lines += blend_lines(report.jobs, report.metric)  # blend=true: better than both parts?
    lines += search_lines(report.jobs, report.metric)  # lr-finder suggestions, seed repeats
    lines += budget_lines(report.budgets, report.root)  # budget=: what each budgeted sweep spent and left out
    command, why = report.next_stage
    lines += ["", f"Base stage (the seed's phase 3): {why}"]
    if command:
        lines.append(f"    {command}")
    return lines


def write_summary(report: Report, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, json_path = (out / f"{SUMMARY}.{ext}" for ext in ("csv", "md", "json"))
    report.frame.to_csv(csv_path, index=False)
    md_path.write_text(f"# Sweep summary: {report.root}\n\nSorted by {report.metric}, best first.\n\n"
                       + markdown_table(report.frame) + "\n\n" + "\n".join(advice_lines(report)) + "\n")
    write_json_atomic(json_path, {
        "root": str(report.root), "metric": report.metric,
        "jobs": [{
            "job": rel_path(j.path, report.root), "state": j.state.value, "note": j.note or None,
            "metrics": j.metrics, "overrides": j.overrides, "command": j.command(),
            "diagnosis": [{"rule": f.rule.value, "message": f.message, "next": j.next_commands(f)}
                          for f in j.findings],
        } for j in report.jobs],
        "best": {m: rel_path(j.path, report.root) for m, j in report.best.items()},
        "base_stage_command": report.next_stage[0], "base_stage_note": report.next_stage[1],
        "budgets": [b.to_dict(report.root) for b in report.budgets],
    })
    return [csv_path, md_path, json_path]
