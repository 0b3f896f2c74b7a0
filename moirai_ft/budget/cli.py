"""train.py's step between its command-line check and Hydra, when the command line sets plan= or budget=:
expand the command's jobs (expand.py), calibrate and plan them (plan.py), print the plan (plan_text.py), and

- plan=true: stop there, exit 0: nothing trains, no directory is made;
- budget=... on a single run: refuse (one line, exit 2) a job the plan says cannot finish in the budget;
- budget=... on a sweep: hand the plan to the sweep (clock.py copies it into the sweep directory), go on.

Torch loads here only when the command line names plan or budget.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from omegaconf import DictConfig

from moirai_ft.artifacts import write_json_atomic
from moirai_ft.budget.clock import PLAN_FILE_ENV
from moirai_ft.budget.duration import format_duration, parse_duration
from moirai_ft.budget.expand import expand
from moirai_ft.sweep.naming import override_key

KEYS = ("plan", "budget")


def named(args: list[str]) -> bool:
    """The command line sets plan= or budget= (the only place they are read: README "Plan and budget")."""
    return any("=" in a and override_key(a) in KEYS for a in args)


def _workdir(cfg: DictConfig, launch_dir: Path) -> Path:
    """Where the calibration writes its temporary job: the disk the sweep's jobs will write to, if it exists."""
    root = Path(cfg.sweep_root)
    root = root if root.is_absolute() else launch_dir / root
    return root if root.is_dir() else launch_dir


def before_hydra(args: list[str], conf_dir: Path, tmp: Path) -> int | None:
    """An exit status when train.py should stop here (plan=true: 0; a single job over budget: 2), None to run."""
    if not named(args):
        return None
    command = expand(args, conf_dir)
    cfg = command.jobs[0].cfg
    if not cfg.plan and cfg.budget is None:
        return None
    budget_s = parse_duration(cfg.budget) if cfg.budget is not None else None
    from moirai_ft.budget import plan as planning  # torch: only now
    from moirai_ft.budget.plan_text import lines

    logging.getLogger("lightning").setLevel(logging.WARNING)  # the calibration's fit is not the user's
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    sweep = planning.plan_sweep(command, _workdir(cfg, Path.cwd()))
    print("\n".join(lines(sweep, budget_s, cfg.budget)), flush=True)
    if cfg.plan:
        return 0
    job = sweep.jobs[0]
    if command.kind == "single" and budget_s is not None and job.error is None and job.estimate_s > budget_s:
        print(f"error: the plan estimates {format_duration(job.estimate_s)} for this job, more than budget={cfg.budget}; "
              "raise budget= or shorten the job (epochs=, steps_per_epoch=)", file=sys.stderr)
        return 2
    path = Path(tmp) / "plan.json"
    write_json_atomic(path, sweep.to_dict())
    os.environ[PLAN_FILE_ENV] = str(path)
    return None
