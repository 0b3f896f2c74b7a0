"""One job as train.py runs it: under its directory's lock, with its fingerprint, and in a sweep first
looking for a twin to skip or continue (the plan in sweep/state.py).

Torch-free at import (the training code loads in run_tracked): train.py checks the command line before
torch loads, and a launcher's job process imports this module, and with it naming.py's resolver, before
Hydra resolves the job's directory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.types import RunMode
from omegaconf import DictConfig

from moirai_ft import weights
from moirai_ft.budget import clock
from moirai_ft.artifacts import CHECKPOINTS, LAST, METRICS, identity, write_json_atomic
from moirai_ft.result import JobResult, Status
from moirai_ft.sweep import naming  # noqa: F401 - registers hydra.sweep.subdir's resolver wherever a job runs
from moirai_ft.sweep.state import (
    FINGERPRINT,
    REFUSED,
    Action,
    JobBusy,
    JobLock,
    Plan,
    earlier_fingerprint,
    fingerprint,
    plan_job,
    read_fingerprint,
    set_aside_failure,
    write_link,
)

if TYPE_CHECKING:
    import lightning as L

log = logging.getLogger(__name__)


def _refused(job_dir: Path, message: str, cfg: DictConfig) -> dict[str, Any]:
    """A job refused before it started. Its metrics.json says why, unless the directory already holds a
    job: that job's result stays whole, and the refusal goes to refused.json, where the sweep's summary
    reads it."""
    metrics = JobResult.failed(identity(cfg), message, "config").to_dict()
    write_json_atomic(job_dir / (REFUSED if read_fingerprint(job_dir) else METRICS), metrics)
    return metrics


def sweep_dir(job_dir: Path, launch_dir: Path) -> Path:
    """hydra.sweep.dir of the running sweep (its jobs are its subdirectories)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return job_dir.parent
    path = Path(HydraConfig.get().sweep.dir)
    return path if path.is_absolute() else launch_dir / path


def run_tracked(
    cfg: DictConfig, mode: RunMode, job_dir: Path, launch_dir: Path, sweep_preset: str | None,
    extra_callbacks: dict[str, L.Callback] | None = None,
) -> dict[str, Any]:
    """One job as train.py runs it: under its lock and with its fingerprint, and in a sweep first
    looking for a twin (sweep/state.py). Returns the job's metrics (a skipped job: its twin's).
    `extra_callbacks` join the job's own Lightning callbacks (the tests' fault injection)."""
    from moirai_ft.train.job import run  # here: importing this module loads no torch (module doc)

    job_dir = Path(job_dir)
    if cfg.get("plan"):  # train.py prints the plan and stops before Hydra: plan=true never trains
        return JobResult.failed(identity(cfg), "plan=true is read from train.py's command line: "
                                "`python train.py plan=true ...`", "config").to_dict()
    if mode != RunMode.MULTIRUN and sweep_preset:
        return _refused(job_dir, f"sweep={sweep_preset} is a sweep preset: run it with -m, "
                        f"as `python train.py -m sweep={sweep_preset}`", cfg)
    fp, config = fingerprint(cfg)
    earlier = earlier_fingerprint(config)  # a directory written before patterns declared what they train
    own = read_fingerprint(job_dir)
    if own is not None and own not in (fp, earlier):
        which = "sweep its own hydra.sweep.dir" if mode == RunMode.MULTIRUN else "run its own hydra.run.dir"
        return _refused(job_dir, f"{job_dir} already holds a job with another config; give this {which}", cfg)
    (job_dir / REFUSED).unlink(missing_ok=True)  # an earlier attempt's: this one is the directory's own
    plan = Plan(Action.run_here, job_dir)
    if mode == RunMode.MULTIRUN and cfg.resume:
        root = Path(cfg.sweep_root)
        plan = plan_job(fp, job_dir, root if root.is_absolute() else launch_dir / root, earlier)
    # the jobs of a sweep share one zero-shot evaluation, in its directory (moirai_ft/evaluation/zero_shot.py)
    shared_root = sweep_dir(job_dir, launch_dir) if mode == RunMode.MULTIRUN else None

    if plan.action == Action.skip_done:
        metrics = json.loads((plan.target / METRICS).read_text())
        write_link(job_dir, plan.target, f"{metrics['status']} earlier", fp)
        log.info("skipped: %s earlier in %s (best_val_loss %s)", metrics["status"], plan.target, metrics.get("best_val_loss"))
        return metrics
    if mode == RunMode.MULTIRUN and plan.action in (Action.run_here, Action.continue_twin):
        if (why := clock.refuse(clock.sweep_dir_of(job_dir), fp)) is not None:  # budget=: the plan says it cannot finish
            return clock.not_started(cfg, job_dir, plan.target, fp, config, *why)
    if plan.action == Action.continue_twin:
        try:
            with JobLock(plan.target):
                weights.discard_damaged(plan.target)  # damaged weights: retrained from the start, not resumed
                resumed = (plan.target / CHECKPOINTS / LAST).is_file()
                write_link(job_dir, plan.target, "continued from its last checkpoint" if resumed else "rerun", fp)
                log.info("continuing the unfinished twin in %s%s", plan.target, " from its last checkpoint" if resumed else "")
                set_aside_failure(plan.target)
                return run(cfg, plan.target, extra_callbacks, shared_root)
        except JobBusy:
            plan = Plan(Action.skip_running, plan.target)
    if plan.action == Action.skip_running:
        write_link(job_dir, plan.target, "running in another process", fp)
        log.info("skipped: another process is running this config in %s", plan.target)
        return JobResult(status=Status.running.value, **identity(cfg),
                         error=f"running in another process in {plan.target}").to_dict()

    with JobLock(job_dir):
        weights.discard_damaged(job_dir)
        set_aside_failure(job_dir)
        write_json_atomic(job_dir / FINGERPRINT, {"fingerprint": fp, "config": config})
        return run(cfg, job_dir, extra_callbacks, shared_root)
