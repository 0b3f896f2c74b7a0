"""`plan=true`: each job's windows, steps, checks and estimated wall time, the sweep's total and, with a
pruner, its expected range, before anything trains (printed by plan_text.py).

A job's time is counted from its parts, each priced by a calibration (calibrate.py) of its cost key:
  setup     the data prepared (timed here) and the model loaded, copied and patterned
  zero-shot the check of the starting model (its validation batches, monitor forecast, best weights):
            in a sweep, only the first job of each zero-shot setting computes it (the others read it)
  train     total steps x one step
  checks    checks x (validation batches x one batch + monitor batches x one forecast + writes)
  test      the selected model on the test batches (and the zero-shot one where the job computes it), and
            the evaluation's fixed part; none for a pruned job left untested (prune.eval_max_windows=0)
A job may stop early (patience, a pruner): the estimate is its full length, the range's low end the pruner's.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from moirai_ft.budget.calibrate import Calibration, calibrate, cost_key
from moirai_ft.budget.expand import Command, Planned
from moirai_ft.config.schema import validate
from moirai_ft.data.prepare import PreparedData, prepare
from moirai_ft.data.windows import eval_batches
from moirai_ft.errors import UserError
from moirai_ft.sweep.state import fingerprint
from moirai_ft.train import distributed
from moirai_ft.train.fit import plan_steps
from moirai_ft.values import plain

log = logging.getLogger(__name__)

# this process's measurements, reused by every job (and by the optuna sweeper's trials) that shares them
_DATA: dict[str, tuple[PreparedData, float]] = {}
_CALIBRATIONS: dict[str, Calibration] = {}


@dataclass
class JobPlan:
    num: int
    name: str  # the job's directory name
    overrides: list[str]
    fingerprint: str
    windows: dict[str, int] = field(default_factory=dict)  # train (all), val (per check), test (evaluated)
    steps_per_epoch: int = 0
    epochs: int = 0
    total_steps: int = 0
    check_steps: list[int] = field(default_factory=list)  # the optimizer step of each check after the zero-shot one
    parts: dict[str, float] = field(default_factory=dict)  # seconds: setup, zero_shot, train, checks, test
    estimate_s: float = 0.0
    low_s: float = 0.0  # with the sweep's pruner at its best (plan.py module doc)
    error: str | None = None  # the job would fail before training: its one line
    calibration: str | None = None  # its calibration's label

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SweepPlan:
    kind: str  # single | grid | optuna
    jobs: list[JobPlan]
    calibrations: list[Calibration]
    startup_s: float  # a process reaching the training code (imports): once, or per job under a process launcher
    process_per_job: bool
    at_a_time: int
    n_trials: int | None
    prune: str
    calibration_s: float

    @property
    def runnable(self) -> list[JobPlan]:
        return [j for j in self.jobs if j.error is None]

    def job_times(self, low: bool = False) -> list[float]:
        """Each job's wall time as the sweep runs it (its own process's start-up included where it has one)."""
        times = [(j.low_s if low else j.estimate_s) for j in self.runnable]
        if self.kind == "optuna" and times:  # n_trials trials, each anywhere in the settings' range
            pick = min(times) if low else max(times)
            times = [pick] * int(self.n_trials or 0)
        return [t + (self.startup_s if self.process_per_job else 0.0) for t in times]

    def batch_ends(self, low: bool = False) -> list[float]:
        """When each job ends: Hydra launches `at_a_time` jobs together and waits for the whole batch."""
        ends, start = [], 0.0 if self.process_per_job else self.startup_s
        times, size = self.job_times(low), max(1, self.at_a_time)
        for first in range(0, len(times), size):
            batch = [start + t for t in times[first:first + size]]
            ends += batch
            start = max(batch)
        return ends

    def total(self, low: bool = False) -> float:
        """The sweep's wall time: its batches one after another, and the start-up."""
        return max(self.batch_ends(low), default=0.0 if self.process_per_job else self.startup_s)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "jobs": [j.to_dict() for j in self.jobs],
                "calibrations": [c.to_dict() for c in self.calibrations], "startup_s": self.startup_s,
                "process_per_job": self.process_per_job, "at_a_time": self.at_a_time, "n_trials": self.n_trials,
                "prune": self.prune, "total_s": self.total(), "low_s": self.total(low=True)}


def check_steps(cfg: DictConfig, steps_per_epoch: int, total_steps: int) -> list[int]:
    """The optimizer step of each validation check after the zero-shot one, as fit.build_trainer sets Lightning's
    schedule up: every N steps for an int val_check_interval, every int(fraction x epoch) steps of each epoch
    for a float, and fit.validate_last_steps's closing check of steps no check saw."""
    vci = cfg.val_check_interval
    if isinstance(vci, int) and not isinstance(vci, bool):
        steps = list(range(vci, total_steps + 1, vci))
    else:
        every = max(1, int(steps_per_epoch * vci))
        steps = [e * steps_per_epoch + k * every for e in range(cfg.epochs) for k in range(1, steps_per_epoch // every + 1)]
    if total_steps and (not steps or steps[-1] < total_steps):
        steps.append(total_steps)
    return steps


def _data_key(cfg: DictConfig) -> str:
    keys = ("data", "context_length", "prediction_length", "patch_size", "model")
    return str(OmegaConf.to_container(OmegaConf.masked_copy(cfg, list(keys)), resolve=True, enum_to_str=True))


def prepared(cfg: DictConfig) -> tuple[PreparedData, float]:
    """The job's data and what preparing it took (once per data setting in this process)."""
    key = _data_key(cfg)
    if key not in _DATA:
        started = time.perf_counter()
        data = prepare(cfg)
        _DATA[key] = (data, time.perf_counter() - started)
    return _DATA[key]


def calibration_for(cfg: DictConfig, data: PreparedData, workdir: Path | None) -> Calibration:
    key = cost_key(cfg)
    if key not in _CALIBRATIONS:
        _CALIBRATIONS[key] = calibrate(cfg, data, workdir)
    return _CALIBRATIONS[key]


# the Optuna pruners whose range the plan can price, by class: a conf/prune file of any name that uses one
# (another reduction factor, a percentile) is planned from its own arguments; any other class as no pruning
HALVING = ("optuna.pruners.SuccessiveHalvingPruner", "optuna.pruners.HyperbandPruner")
PERCENTILE = ("optuna.pruners.MedianPruner", "optuna.pruners.PercentilePruner")


def expected_fraction(prune: DictConfig, checks: int) -> list[tuple[float, int]]:
    """(share of jobs, checks they reach) with the pruner at its best: successive halving keeps
    1/reduction_factor of the jobs at each rung (min_resource x reduction_factor^k checks); the median rule
    (a percentile rule: that percentile) stops the rest at the first check after its warm-up. No pruner, or
    one the plan cannot price: every job reaches every check."""
    spec = prune.get("pruner") or {}
    target = str(spec.get("_target_", ""))
    if target in HALVING and checks > 0:
        rung = spec.get("min_resource", 1)
        rung = int(rung) if str(rung).isdigit() else 1  # "auto" (Optuna learns it): priced as 1, the soonest rung
        eta, share, out = int(spec.get("reduction_factor", 3)), 1.0, []
        while rung < checks:
            out.append((share * (1 - 1 / eta), rung))
            share, rung = share / eta, rung * eta
        return out + [(share, checks)]
    decided_at = int(spec.get("n_warmup_steps", 0)) + 1  # the first check after the warm-up
    if target in PERCENTILE and checks > decided_at:
        kept = float(spec.get("percentile", 50.0)) / 100
        return [(1 - kept, decided_at), (kept, checks)]
    return [(1.0, checks)]


def shares_zero_shot() -> bool:
    """Whether a sweep's jobs share one zero-shot evaluation (moirai_ft/evaluation/zero_shot.py): then only the
    first job of each zero-shot setting pays its check and its test forecast."""
    return importlib.util.find_spec("moirai_ft.evaluation.zero_shot") is not None


def zero_shot_key(cfg: DictConfig) -> str:
    """Jobs of a sweep with the same starting model, data, windows and evaluation (not pattern, lr, ...)."""
    return cost_key(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "pattern"]))


def plan_job(job: Planned, workdir: Path | None, paid: set[str] | None = None) -> JobPlan:
    """One job's counts and estimate (module doc); a job that would fail has its one line in `error`.
    `paid`: the zero-shot settings whose evaluation an earlier job of the sweep computes (None: the job
    evaluates its zero-shot model itself); the job's own is added."""
    cfg = job.cfg
    plan = JobPlan(job.num, job.name, job.overrides, fingerprint(cfg)[0])
    try:
        validate(cfg)
        data, data_s = prepared(cfg)
        world = distributed.world_size(cfg)
        per_device = distributed.per_device_batch_size(cfg.batch_size, world)
        steps = plan_steps(cfg, len(data.train), per_device, 0, world)
        calibration = calibration_for(cfg, data, workdir)
    except UserError as e:
        plan.error = str(e)
        return plan
    val = eval_batches(len(data.val), cfg.batch_size, cfg.val_max_windows)
    test = eval_batches(len(data.test), cfg.eval.batch_size, cfg.eval.max_windows)
    plan.windows = {"train": len(data.train), "val": sum(len(b) for b in val), "test": sum(len(b) for b in test)}
    plan.steps_per_epoch, plan.epochs, plan.total_steps = steps.steps_per_epoch, cfg.epochs, steps.total_steps
    plan.check_steps = check_steps(cfg, steps.steps_per_epoch, steps.total_steps) if cfg.epochs > 0 else []
    plan.calibration = calibration.label
    c = calibration
    check = math.ceil(len(val) / world) * c.val_batch_s + len(val) * c.monitor_batch_s + c.check_s
    # the zero-shot check and test forecast: this job's own, or the sweep's first job's (a multi-device job
    # evaluates its own: its ranks would have to agree on reading it)
    shared = paid is not None and world == 1
    key = zero_shot_key(cfg) if shared else ""
    own_zero_shot = not shared or key not in paid
    if shared:
        paid.add(key)

    def test_s(windows: int | None) -> float:
        if windows == 0:  # a pruned job left untested (prune.eval_max_windows=0)
            return 0.0
        batches = len(eval_batches(len(data.test), cfg.eval.batch_size, windows))
        return c.test_fixed_s + (2 if own_zero_shot else 1) * batches * c.test_batch_s

    def until(checks: int, pruned: bool = False) -> float:
        """The job's time when it stops at its `checks`-th check (all of them: its full length)."""
        step = plan.check_steps[checks - 1] if checks else 0
        windows = cfg.prune.eval_max_windows if pruned and cfg.prune.eval_max_windows is not None else cfg.eval.max_windows
        return data_s + c.load_s + (check if own_zero_shot else 0.0) + step * c.step_s + checks * check + test_s(windows)

    n = len(plan.check_steps)
    plan.parts = {"setup": data_s + c.load_s, "zero_shot": check if own_zero_shot else 0.0,
                  "train": plan.total_steps * c.step_s, "checks": n * check, "test": test_s(cfg.eval.max_windows)}
    plan.estimate_s = until(n)
    plan.low_s = sum(share * until(reached, pruned=reached < n) for share, reached in expected_fraction(cfg.prune, n))
    return plan


def startup_seconds() -> float:
    """How long this process took to reach the training code: what a launcher that starts a process per job
    pays again for each (the training modules are imported here first if they were not yet)."""
    import psutil

    import moirai_ft.train.job  # noqa: F401

    return max(0.0, time.time() - psutil.Process().create_time())


def plan_sweep(command: Command, workdir: Path | None = None) -> SweepPlan:
    startup = startup_seconds()
    started = time.perf_counter()
    paid: set[str] | None = set() if command.kind != "single" and shares_zero_shot() else None
    jobs = [plan_job(job, workdir, paid) for job in command.jobs]
    first = command.jobs[0].cfg
    return SweepPlan(command.kind, jobs, list(_CALIBRATIONS.values()), startup, command.process_per_job,
                     command.at_a_time, command.n_trials, str(plain(first.prune.name)),
                     time.perf_counter() - started)

