"""budget= for hydra/sweeper=optuna: before launching a trial the sweeper asks whether the plan says it can
finish in the sweep's time left. A trial's cost depends on what it drew (a pattern, a batch size), so each is
planned from its own composed config, on the calibrations train.py's plan made in this process (plan.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, open_dict

from moirai_ft.budget import clock
from moirai_ft.budget.expand import Planned
from moirai_ft.budget.plan import plan_job, shares_zero_shot, startup_seconds


class TrialGate:
    def __init__(self, config: DictConfig, sweep_dir: Path, config_loader: Any, process_per_job: bool):
        self.config, self.sweep_dir, self.loader = config, Path(sweep_dir), config_loader
        self.startup_s = startup_seconds() if process_per_job else 0.0
        self.paid: set[str] | None = set() if shares_zero_shot() else None  # the first trial computes the zero-shot

    def estimate(self, overrides: Sequence[str]) -> float | None:
        cfg = self.loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):  # the job's own config: hydra's node needs a job's runtime to resolve
            del cfg["hydra"]
        plan = plan_job(Planned(0, list(overrides), "", cfg), self.sweep_dir.parent, self.paid)
        return None if plan.error is not None else plan.estimate_s + self.startup_s

    def refuse(self, overrides: Sequence[str]) -> tuple[float | None, float] | None:
        """None: the trial may start; else (its estimate, the budget left)."""
        record = clock.read_budget(self.sweep_dir)
        if record is None:
            return None
        planned, remaining = self.estimate(overrides), clock.left(record)
        if remaining <= 0 or (planned is not None and planned > remaining):
            return planned, remaining
        return None
