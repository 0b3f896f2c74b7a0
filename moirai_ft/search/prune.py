"""`prune=none|asha|hyperband|median` and `prune.zero_shot_checks`: stop a sweep's hopeless jobs early.

Each job is a trial of the Optuna study its sweep shares (moirai_ft/search/study.py). At every
validation check it reports its best monitored value so far (what the job would end with if stopped
now: the best weights are kept) with the check's number as the step, and stops when Optuna's pruner
says so. The pruners are Optuna's own, each a `_target_` entry in conf/prune/ (a new one is one file there);
nothing here decides rungs or medians.

Independently of the pruner, `prune.zero_shot_checks=N` stops a job whose monitored value is still
above its zero-shot value at its N-th check or later (reason worse_than_zero_shot): the user's rule for
fine-tuning that makes the model worse (uni2ts #31, #94, #188).

A pruned job is a result: it keeps its best weights and records `status: pruned`, `pruned_at_check` and
`pruned_reason`. It is not tested by default (prune.eval_max_windows=0; `pruned_test_config` says why).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from moirai_ft.search import study as studies
from moirai_ft.train.callbacks import BestWeights

log = logging.getLogger(__name__)

WORSE_THAN_ZERO_SHOT = "worse_than_zero_shot"
UNTESTED = "pruned: not tested (prune.eval_max_windows=0); `python -m moirai_ft.evaluate <job_dir>` tests it"


def build_pruner(prune: DictConfig) -> optuna.pruners.BasePruner | None:
    """The `_target_` entry of conf/prune/<name>.yaml (None for prune=none: no pruner)."""
    if prune.get("pruner") is None:
        return None
    return instantiate(prune.pruner)


@dataclass
class JobTrial:
    """The job's trial in the sweep's study."""

    study: optuna.Study
    trial: optuna.Trial
    owned_by_sweeper: bool  # asked by hydra/sweeper=optuna (which also tells it when the job did not)


def job_trial(cfg: DictConfig, job_dir: Path) -> JobTrial | None:
    """The job's trial, when a pruner is set or an optuna sweeper launched the job; None otherwise."""
    pruner = build_pruner(cfg.prune)
    sweep_dir, job_num, launch_dir = _hydra_context(job_dir)
    numbers = studies.read_trial_numbers(sweep_dir) if sweep_dir else {}
    number = numbers.get(str(job_num)) if job_num is not None else None
    if pruner is None and number is None:
        return None
    overrides = (studies.sweep_overrides(sweep_dir) if sweep_dir else None) or []
    storage = studies.storage_for(cfg.prune.storage, cfg.sweep_root, launch_dir)
    study = studies.open_study(storage, studies.study_name_for(overrides, cfg.prune.study_name), pruner)
    studies.agree_on_pruner(study, cfg.prune)
    if number is not None:
        return JobTrial(study, studies.trial_by_number(study, number), owned_by_sweeper=True)
    return JobTrial(study, study.ask(), owned_by_sweeper=False)


def _hydra_context(job_dir: Path) -> tuple[Path | None, int | None, Path]:
    """(sweep dir, hydra.job.num, launch dir) of a job run by Hydra; (None, None, cwd) otherwise."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None, Path.cwd()
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None, None, Path(hc.runtime.cwd)
    return Path(hc.sweep.dir), int(hc.job.num), Path(hc.runtime.cwd)


class Pruning(L.Callback):
    """Reports the best monitored value at every validation check and stops the fit when the pruner,
    or the zero-shot rule, says so. Listed after BestWeights: it reads the check BestWeights just scored."""

    def __init__(self, trial: JobTrial | None, zero_shot_checks: int | None, pruner_name: str):
        self.trial, self.zero_shot_checks, self.pruner_name = trial, zero_shot_checks, pruner_name
        self.best: BestWeights | None = None  # the job's, found among the trainer's callbacks
        self.pruned_at: int | None = None
        self.reason: str | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.best = next(c for c in trainer.callbacks if isinstance(c, BestWeights))

    def decide(self, check: int) -> str | None:
        """Why the job stops at this check (it is the `check`-th after the zero-shot one), or None."""
        current = self.best.values[-1] if self.best.values else math.nan
        zero_shot = self.best.zero_shot_value
        if (self.zero_shot_checks is not None and check >= self.zero_shot_checks and zero_shot is not None
                and not current < zero_shot):  # NaN counts as above
            return WORSE_THAN_ZERO_SHOT
        if self.trial is not None:
            best_so_far = self.best.best_value
            if math.isfinite(best_so_far):
                self.trial.trial.report(best_so_far, check)
            if self.trial.trial.should_prune():
                return self.pruner_name
        return None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn == "validate" or self.pruned_at is not None:
            return
        check = self.best.checks - 1
        reason = self.decide(check) if trainer.is_global_zero else None
        reason = trainer.strategy.broadcast(reason, src=0)  # every rank stops at the same check
        if reason is not None:
            self.pruned_at, self.reason = check, reason
            log.info("pruned at validation check %d (%s)", check, reason)
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"pruned_at": self.pruned_at, "reason": self.reason}

    def load_state_dict(self, state_dict: dict) -> None:
        self.pruned_at, self.reason = state_dict.get("pruned_at"), state_dict.get("reason")


def pruning_callbacks(cfg: DictConfig, trial: JobTrial | None) -> dict[str, L.Callback]:
    """{"pruning": Pruning} when a pruner or the zero-shot rule is set (on every rank: they stop
    together), else {}."""
    name = str(cfg.prune.name)
    pruner = cfg.prune.get("pruner") is not None
    if not pruner and cfg.prune.zero_shot_checks is None:
        return {}
    return {"pruning": Pruning(trial if pruner else None, cfg.prune.zero_shot_checks, name)}


def finish_trial(trial: JobTrial | None, status: str, value: float, error: str | None = None) -> None:
    """Tell the study how the job ended: pruned, complete with its objective, or failed (`error`: why, kept
    as the trial's user attribute "error", as the optuna sweeper records its failed trials)."""
    if trial is None:
        return
    try:
        if error is not None:
            trial.trial.set_user_attr("error", error)
        if status == "pruned":
            trial.study.tell(trial.trial, state=optuna.trial.TrialState.PRUNED)
        elif status == "completed" and math.isfinite(value):
            trial.study.tell(trial.trial, value)
        else:
            trial.study.tell(trial.trial, state=optuna.trial.TrialState.FAIL)
    except (ValueError, RuntimeError) as e:  # already finished (a resumed job's trial): nothing to record
        log.warning("study not updated: %s", e)


def pruned_test_config(cfg: DictConfig) -> DictConfig | None:
    """The config a pruned job's test evaluation runs with, or None: not tested (prune.eval_max_windows=0,
    the default). What the sweep and the user decide on is validation: the pruner, the sweeper's objective
    and analyze's default ranking read best_monitored / best_val_loss, which a pruned job has; choosing the
    winner on test would leak the test split into the choice. A pruned job's test figures describe a run
    stopped early, not its configuration, and cost as much as a finished job's (the selected model's
    forecast of every test window). prune.eval_max_windows=N tests it on N windows, null on eval.max_windows."""
    windows = cfg.prune.eval_max_windows
    if windows == 0:
        return None
    if windows is None:
        return cfg
    eval_cfg = copy.deepcopy(cfg)
    with open_dict(eval_cfg):
        eval_cfg.eval.max_windows = windows
    return eval_cfg
