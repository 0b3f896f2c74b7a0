"""`budget=<duration>` in a sweep: one wall clock for the whole sweep, whichever launcher runs its jobs.

- BudgetClock (a Hydra callback in conf/train.yaml) records the sweep's start (this process's start: the plan
  and its calibration count) and budget in `<sweep dir>/budget.json`, and the plan train.py made
  (cli.py) in `<sweep dir>/plan.json`, before the first job; a job in another process, or on another node over
  a shared file system, reads both there.
- A grid's job, about to train (sweep/runner.py), starts only if the plan's estimate for it fits in what is
  left; otherwise it records `not started: budget` (metrics.json, with its fingerprint, so the same command
  with a larger budget continues it as it continues any unfinished job) and marks the budget spent, so the
  jobs after it in the grid's order are left out too.
- The optuna sweeper asks the same of each trial before launching it (hydra_plugins/moirai_optuna_sweeper).
Torch-free: the job runner imports it before torch loads.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from moirai_ft.artifacts import METRICS, identity, read_json, write_json_atomic
from moirai_ft.budget.duration import format_duration, parse_duration
from moirai_ft.result import JobResult, Status
from moirai_ft.sweep.state import FINGERPRINT, JobLock, read_fingerprint, set_aside_failure, sweep_outcomes, write_link

# {"budget", "budget_s", "started", "ended", "left_out": [trials an optuna sweep left out],
#  "not_started": [the grid's jobs left out, when the sweep ended]}
BUDGET = "budget.json"
PLAN = "plan.json"  # the plan train.py printed (plan.SweepPlan.to_dict())
SPENT = "budget_spent"  # present once a job was left out: every job after it in the sweep is left out too
PLAN_FILE_ENV = "MOIRAI_FT_PLAN_FILE"  # train.py's plan, for BudgetClock to copy into the sweep directory
NOT_STARTED = Status.not_started.value


def process_started() -> float:
    """When this process started (the sweep's clock starts there: its plan counts)."""
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:  # noqa: BLE001 - without psutil, now
        return time.time()


class BudgetClock(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("budget") is None:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / SPENT).unlink(missing_ok=True)  # a rerun in the same directory has a clock of its own
        plan = read_json(Path(os.environ[PLAN_FILE_ENV])) if os.environ.get(PLAN_FILE_ENV) else None
        if isinstance(plan, dict):
            write_json_atomic(sweep_dir / PLAN, plan)
        write_json_atomic(sweep_dir / BUDGET, {"budget": str(config.budget), "budget_s": parse_duration(config.budget),
                                               "started": process_started(), "ended": None, "left_out": []})

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        record = read_budget(sweep_dir)
        if record is not None:  # what it left out stays on record after a larger budget trained them
            left_out = [o.job_dir.name for o in sweep_outcomes(sweep_dir, float(record["started"]))
                        if o.status == NOT_STARTED]
            write_json_atomic(sweep_dir / BUDGET, {**record, "ended": time.time(), "not_started": left_out})


def sweep_dir_of(job_dir: Path) -> Path:
    """The sweep directory of a job Hydra runs (its job directory's parent otherwise)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().sweep.dir)
    return Path(job_dir).parent


def read_budget(sweep_dir: Path) -> dict[str, Any] | None:
    record = read_json(Path(sweep_dir) / BUDGET)
    return record if isinstance(record, dict) and isinstance(record.get("budget_s"), (int, float)) else None


def estimate(sweep_dir: Path, fp: str) -> float | None:
    """The plan's wall time for the job with fingerprint fp (its process start-up included where each job
    pays one); None when the plan has no such job."""
    plan = read_json(Path(sweep_dir) / PLAN)
    if not isinstance(plan, dict):
        return None
    extra = float(plan.get("startup_s") or 0.0) if plan.get("process_per_job") else 0.0
    for job in plan.get("jobs") or []:
        if job.get("fingerprint") == fp and job.get("error") is None:
            return float(job["estimate_s"]) + extra
    return None


def left(record: dict[str, Any], now: float | None = None) -> float:
    """Seconds of the budget left."""
    return float(record["budget_s"]) - ((now or time.time()) - float(record["started"]))


def refuse(sweep_dir: Path, fp: str) -> tuple[float | None, float] | None:
    """None: the job may start. Else (its estimate, the budget left) and the budget is marked spent."""
    record = read_budget(sweep_dir)
    if record is None:
        return None
    planned, remaining = estimate(sweep_dir, fp), left(record)
    if (Path(sweep_dir) / SPENT).exists() or remaining <= 0 or (planned is not None and planned > remaining):
        (Path(sweep_dir) / SPENT).touch()
        return planned, remaining
    return None


def not_started(cfg: DictConfig, job_dir: Path, target: Path, fp: str, config: dict[str, Any],
                planned: float | None, remaining: float) -> dict[str, Any]:
    """Record a job the budget left out, in `target` (the directory that will hold its result: its own, or
    an unfinished twin's, linked from its own), with its fingerprint: a rerun with a larger budget continues it."""
    metrics = JobResult(status=NOT_STARTED, **identity(cfg), planned_s=planned,
                        budget_left_s=round(max(remaining, 0.0), 3)).to_dict()
    with JobLock(target):
        if Path(target).resolve() != Path(job_dir).resolve():
            set_aside_failure(target)
            write_link(job_dir, target, NOT_STARTED, fp)
        if read_fingerprint(target) is None:
            write_json_atomic(Path(target) / FINGERPRINT, {"fingerprint": fp, "config": config})
        write_json_atomic(Path(target) / METRICS, metrics)
    return metrics


def record_left_out(sweep_dir: Path, entry: dict[str, Any]) -> None:
    """An optuna trial the budget left out, in budget.json (the sweeper alone writes it: one process)."""
    record = read_budget(sweep_dir)
    if record is not None:
        write_json_atomic(Path(sweep_dir) / BUDGET, {**record, "left_out": list(record.get("left_out") or []) + [entry]})


def budget_summary(sweep_dir: Path, not_started: list[str]) -> str | None:
    """The sweep summary's budget lines: what was spent of it, and the jobs (and optuna trials) left out."""
    record = read_budget(sweep_dir)
    if record is None:
        return None
    spent = (record.get("ended") or time.time()) - float(record["started"])
    trials = [str(t.get("overrides")) for t in record.get("left_out") or []]
    lines = [f"budget={record['budget']}: spent {format_duration(spent)} of {format_duration(record['budget_s'])}"
             + (f"; {len(not_started) + len(trials)} left out ({NOT_STARTED})" if not_started or trials else "")]
    lines += [f"  {NOT_STARTED} {name}" for name in not_started + trials]
    if not_started or trials:
        lines.append("  the same command with a larger budget= continues with them (finished jobs are skipped)")
    return "\n".join(lines)
