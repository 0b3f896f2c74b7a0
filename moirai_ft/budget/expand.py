"""The jobs a train.py command line describes, before Hydra runs it: one job, a grid in the order Hydra's basic
sweeper launches it, or the settings an Optuna search can propose. Torch-free: plan.py composes and estimates them.

A grid is expanded by Hydra's own BasicSweeper.split_arguments over the preset's hydra.sweeper.params and the
command line, so job i here is hydra.job.num i there. An Optuna search has no jobs yet: its settings are every
combination of its choice()/range()/list values with each interval() at both ends (what a trial can cost
depends on what it draws; the ends bound an interval's effect on windows, steps and checks).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override
from omegaconf import DictConfig

from moirai_ft.config.precheck import job_overrides
from moirai_ft.sweep.naming import dirname, format_value, override_key
from moirai_ft.values import plain

MULTIRUN = ("-m", "--multirun")
OPTUNA = "moirai_optuna_sweeper"  # hydra_plugins/moirai_optuna_sweeper: hydra/sweeper=optuna
MAX_SETTINGS = 64  # an Optuna space's combinations planned at most (the rest share their costs)


@dataclass
class Planned:
    """One job to plan: its overrides (hydra's own left out), the directory name it will have, and its config
    as Hydra will compose it (so its fingerprint is the job's)."""

    num: int
    overrides: list[str]
    name: str
    cfg: DictConfig


@dataclass
class Command:
    kind: str  # single | grid | optuna
    hydra_overrides: list[str]  # hydra.*, hydra/...: every job's composition gets them
    jobs: list[Planned]
    n_trials: int | None = None  # optuna: trials the search runs in all
    at_a_time: int = 1  # jobs launched together, in batches waited for as a whole (Hydra's sweepers)
    process_per_job: bool = False  # a launcher that starts a process per job: each pays the imports
    launcher: str = "basic"
    space: dict[str, str] = field(default_factory=dict)  # optuna: key -> what it searches


def _compose(overrides: list[str], hydra: bool = False) -> DictConfig:
    """Inside expand()'s one initialize_config_dir (initialising costs more than composing)."""
    return compose(config_name="train", overrides=overrides, return_hydra_config=hydra)


def _varied(parsed: list[Override], params: dict) -> set[str]:
    return {o.key_or_group for o in parsed if o.is_sweep_override()} | {override_key(k) for k in params}


def _name(cfg: DictConfig, overrides: list[str], varied: set[str] | None) -> str:
    return dirname(cfg.model.name, plain(cfg.pattern.name), cfg.lr, overrides, varied)


def _optuna_settings(parsed: list[Override]) -> tuple[list[list[str]], dict[str, str]]:
    """Every combination of the space's discrete values with each interval at both ends (capped)."""
    fixed: list[str] = []
    axes: list[list[str]] = []
    space: dict[str, str] = {}
    for o in parsed:
        key = o.get_key_element()
        if not o.is_sweep_override():
            fixed.append(f"{key}={o.get_value_element_as_str()}")
            continue
        value = o.value()
        if isinstance(value, IntervalSweep):
            ends = [value.start, value.end]
            if "int" in value.tags:
                ends = [int(e) for e in ends]
            axes.append([f"{key}={format_value(e)}" for e in dict.fromkeys(ends)])
            space[key] = f"{format_value(ends[0])}..{format_value(ends[-1])}"
        else:
            values = list(o.sweep_string_iterator())
            axes.append([f"{key}={v}" for v in values])
            space[key] = ",".join(values)
    combos = [fixed + list(c) for c in itertools.islice(itertools.product(*axes), MAX_SETTINGS)]
    return combos, space


def expand(args: list[str], conf_dir: Path) -> Command:
    """The command line's jobs (module doc). Call after config/precheck.py accepted the command line."""
    with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
        return _expand(args)


def _expand(args: list[str]) -> Command:
    multirun = any(a in MULTIRUN for a in args)
    overrides = [a for a in args if a not in MULTIRUN]
    parsed_all = OverridesParser.create().parse_overrides(overrides)
    hydra_overrides = [raw for raw, o in zip(overrides, parsed_all) if o.is_hydra_override()]
    task = [raw for raw, o in zip(overrides, parsed_all) if not o.is_hydra_override()]
    if not multirun:
        cfg = _compose(overrides)
        return Command("single", hydra_overrides, [Planned(0, task, _name(cfg, task, set()), cfg)])

    first = job_overrides(overrides, parsed_all)[0]
    hydra = _compose(first, hydra=True).hydra
    params = dict(hydra.sweeper.get("params") or {})
    lines = [f"{k}={v}" for k, v in params.items()] + task
    parsed = OverridesParser.create().parse_overrides(lines)
    varied = _varied(parsed, params)
    launcher = str(hydra.launcher.get("_target_", ""))
    per_process = "BasicLauncher" not in launcher
    command = Command("grid", hydra_overrides, [], launcher=launcher.rsplit(".", 1)[-1], process_per_job=per_process)
    if OPTUNA in str(hydra.sweeper.get("_target_", "")):
        settings, command.space = _optuna_settings(parsed)
        command.kind, command.n_trials = "optuna", int(hydra.sweeper.n_trials)
        command.at_a_time = int(hydra.sweeper.get("n_jobs") or 1) if per_process else 1  # basic: one by one
    else:
        settings = BasicSweeper.split_arguments(parsed, None)[0]
        if per_process:  # the launcher runs each batch of max_batch_size at once (every job without one)
            limits = [hydra.sweeper.get("max_batch_size"), hydra.launcher.get("array_parallelism"),
                      hydra.launcher.get("n_jobs")]
            command.at_a_time = min([int(v) for v in limits if v] + [len(settings)])
    for num, job in enumerate(settings):
        cfg = _compose(hydra_overrides + list(job))
        command.jobs.append(Planned(num, list(job), _name(cfg, list(job), varied), cfg))
    return command
