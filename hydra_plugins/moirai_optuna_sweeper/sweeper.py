"""`python train.py -m hydra/sweeper=optuna hydra.sweeper.n_trials=12 'lr=tag(log,interval(1e-7,1e-3))'
'pattern=choice(full,freeze_ffn,head_only)'`: an Optuna study proposes the jobs.

- The search space is Hydra's sweep syntax (space.py): `interval(a,b)` (float; `tag(int, ...)` for integers,
  `tag(log, ...)` for a log scale), `choice(...)`, plain lists `a,b,c` and `range(...)` (categorical).
  Overrides that are not sweeps go to every trial unchanged.
- `n_trials` trials in all, `n_jobs` at a time through whichever hydra/launcher is chosen; a space of
  choices only ends the search once each of its points is evaluated (a repeat would only skip its job).
- `sampler`: tpe (default), random or grid (choices and ranges only), seeded by `seed`: a name in `samplers`,
  each an Optuna sampler as a `_target_` entry (hydra_plugins/moirai_optuna_sweeper/config.py).
- The study lives where the jobs' pruner keeps its own (moirai_ft/search/study.py: prune.storage,
  default Optuna's journal file <sweep_root>/optuna_journal.log), named after the command line, so
  `prune=asha` sees every trial, and rerunning the same command continues the study up to n_trials.
  A trial left running by a killed sweep is asked again (workers.py); its job then continues or is skipped by the
  sweep's fingerprint resume (moirai_ft/sweep/state.py, runner.py), so a completed job is never retrained.
- `budget=2h` (moirai_ft/budget): a trial starts only if the plan of its own config (what it drew) says it
  can finish in the sweep's time left; the first that cannot ends the search, told to the study as failed
  and interrupted (not counted: the same command with a larger budget runs up to n_trials).
- The objective is train.py's return value: the job's best monitored value (`monitor=`). A job that
  fails is a FAIL trial with its error as a user attribute, and the study goes on. A pruned job has
  told the study itself (moirai_ft/search/prune.py).

Written for Optuna >= 4 after reading hydra-optuna-sweeper's design (which pins optuna < 3 and cannot
prune); nothing is copied from it.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any, Optional

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.moirai_optuna_sweeper.space import distribution, exhausted, make_sampler, size
from hydra_plugins.moirai_optuna_sweeper.workers import INTERRUPTED, OWNER, Worker, counted, requeue_interrupted
from moirai_ft.console import quiet_third_party
from moirai_ft.errors import UserError
from moirai_ft.search import study as studies
from moirai_ft.sweep.naming import format_value

log = logging.getLogger(__name__)
RESULTS = "optuna_results.yaml"


class OptunaSweeper(Sweeper):
    def __init__(self, n_trials: int, n_jobs: int, sampler: str, seed: Optional[int], params: Optional[dict] = None,
                 samplers: Optional[dict] = None):
        if n_trials < 1 or n_jobs < 1:
            raise HydraException(f"hydra.sweeper.n_trials and n_jobs must be >= 1 (got {n_trials}, {n_jobs})")
        self.n_trials, self.n_jobs, self.sampler_name, self.seed = n_trials, n_jobs, sampler, seed
        self.params = dict(params or {})
        self.samplers = dict(samplers) if samplers is not None else None
        self.config: Optional[DictConfig] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        quiet_third_party()  # the sweep's process: Optuna's INFO line for every study opened and trial asked
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def _space(self, arguments: list[str]) -> tuple[dict[str, optuna.distributions.BaseDistribution], list[str]]:
        lines = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space, fixed = {}, []
        for o in parser.parse_overrides(lines):
            if o.is_sweep_override():
                space[o.get_key_element()] = distribution(o)
            else:
                fixed.append(f"{o.get_key_element()}={o.get_value_element_as_str()}")
        return space, fixed

    def _study(self, space: dict[str, Any]) -> optuna.Study:
        assert self.config is not None
        cfg = self.config
        name = studies.study_name_for([str(o) for o in cfg.hydra.overrides.task], cfg.prune.study_name)
        try:
            storage = studies.storage_for(cfg.prune.storage, cfg.sweep_root, Path.cwd())
            first = studies.open_study(storage, name)
            studies.agree_on_pruner(first, cfg.prune)
        except UserError as e:  # no driver for prune.storage, another pruner on the study: one line
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        existing = len(first.get_trials(deepcopy=False))
        # a rerun continuing the study: the seed moved on by the trials so far, else a seeded sampler would
        # propose the first run's points again (their jobs would only be skipped as done)
        seed = None if self.seed is None else self.seed + existing
        study = studies.open_study(storage, name, sampler=make_sampler(self.sampler_name, seed, space, self.samplers))
        log.info("optuna study %s: %s", name, studies.study_summary(study) or "new")
        return study


    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None
        space, fixed = self._space(arguments)
        if not space:
            raise HydraException("hydra/sweeper=optuna needs a search space: e.g. 'lr=tag(log,interval(1e-7,1e-3))'")
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # what the job names and the jobs' study read
        study = self._study(space)
        worker = Worker(study)
        try:
            returns = self._run_trials(study, worker, space, fixed, sweep_dir)
        finally:
            worker.end()
        self._write_results(study, sweep_dir)
        return returns

    def _run_trials(self, study: optuna.Study, worker: Worker, space: dict[str, Any], fixed: list[str],
                    sweep_dir: Path) -> list[Any]:
        requeue_interrupted(study, worker)
        gate = self._budget_gate(sweep_dir)
        job_idx, returns = 0, []
        while (remaining := self.n_trials - counted(study, worker)) > 0:
            if exhausted(study, space):  # n_trials over a few choices: the rest would be repeats, each a skip
                print(f"optuna study {study.study_name}: all {size(space)} points of the search space are evaluated; "
                      f"the search ends with {remaining} of its {self.n_trials} trials unused")
                break
            trials = [study.ask(space) for _ in range(min(self.n_jobs, remaining))]
            for t in trials:
                t.set_user_attr(OWNER, worker.id)
            batch = [fixed + [f"{k}={format_value(v)}" for k, v in t.params.items()] for t in trials]
            fits = self._within_budget(gate, study, sweep_dir, trials, batch)
            spent = fits < len(trials)  # budget=: the rest of the search is left out
            trials, batch = trials[:fits], batch[:fits]
            if not trials:
                break
            studies.write_trial_numbers(sweep_dir, {job_idx + i: t.number for i, t in enumerate(trials)})
            results = self.launcher.launch(batch, initial_job_idx=job_idx)
            for trial, result in zip(trials, results):
                self._tell(study, trial, result)
            job_idx += len(trials)
            returns.append(results)
            if spent:
                break
        return returns

    def _budget_gate(self, sweep_dir: Path) -> Any:
        """budget=: what says whether a trial can finish in the time left (moirai_ft/budget/trials.py)."""
        assert self.config is not None
        if self.config.get("budget") is None:
            return None
        from moirai_ft.budget.trials import TrialGate  # torch: only with a budget

        per_job = "BasicLauncher" not in str(self.config.hydra.launcher.get("_target_", ""))
        return TrialGate(self.config, sweep_dir, self.hydra_context.config_loader, per_job)

    @staticmethod
    def _within_budget(gate: Any, study: optuna.Study, sweep_dir: Path, trials: list, batch: list) -> int:
        """How many of the asked trials start; from the first the plan says cannot finish in the budget left,
        none: those are told the study as failed and interrupted (not counted, so a larger budget runs its
        n_trials) and listed in budget.json as `not started: budget`."""
        if gate is None:
            return len(trials)
        from moirai_ft.budget import clock

        for i, (trial, overrides) in enumerate(zip(trials, batch)):
            if (why := gate.refuse(overrides)) is None:
                continue
            for t, o in zip(trials[i:], batch[i:]):
                t.set_user_attr(INTERRUPTED, True)
                t.set_user_attr("not_started", clock.NOT_STARTED)
                study.tell(t, state=optuna.trial.TrialState.FAIL)
                clock.record_left_out(sweep_dir, {"trial": t.number, "overrides": " ".join(o), "planned_s": why[0],
                                                  "budget_left_s": why[1]})
                print(f"{clock.NOT_STARTED}: trial {t.number} ({' '.join(o)})")
            return i
        return len(trials)

    @staticmethod
    def _tell(study: optuna.Study, trial: optuna.Trial, result: Any) -> None:
        """Record a trial the job did not finish itself (a pruning job tells its own)."""
        state = study._storage.get_trial(trial._trial_id).state
        if state != optuna.trial.TrialState.RUNNING:
            return
        if result.status == JobStatus.FAILED:
            error = result._return_value
            trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return
        value = result.return_value
        if isinstance(value, (int, float)) and math.isfinite(value):
            study.tell(trial, float(value))
        else:
            trial.set_user_attr("error", "the job left no result (see its metrics.json)")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)

    @staticmethod
    def _write_results(study: optuna.Study, sweep_dir: Path) -> None:
        try:
            best = study.best_trial
        except ValueError:
            print(f"optuna study {study.study_name}: no completed trial")
            return
        OmegaConf.save(OmegaConf.create({"study": study.study_name, "best_value": best.value,
                                         "best_params": best.params, "trials": studies.study_summary(study)}),
                       sweep_dir / RESULTS)
        print(f"optuna study {study.study_name}: best value {best.value:.6g} with "
              + " ".join(f"{k}={format_value(v)}" for k, v in best.params.items()))
