"""The job's Lightning callbacks and loggers, built from the config groups conf/callbacks and conf/logger.

Each group holds named `_target_` entries (as lightning-hydra-template does); the job reaches a callback
by its name. What only the job knows at run time is passed here explicitly: the job directory the
callbacks write into, and, for the loggers, the step a resumed fit continues from.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from moirai_ft.artifacts import BEST, CHECKPOINTS, HISTORY, LAST
from moirai_ft.errors import UserError
from moirai_ft.search.monitor import history_extra, metric_key

# the callbacks the job reads its result from (job.py): a callbacks group must define them
REQUIRED_CALLBACKS = ("best_weights", "divergence", "throughput")


def job_args(cfg: DictConfig, job_dir: Path) -> dict[str, dict[str, Any]]:
    """By callback name, what the job adds to its entry: where it writes in the job directory (the names
    of moirai_ft/artifacts.py), and what the `monitor` setting selects on (moirai_ft/search/monitor.py)."""
    checkpoints = Path(job_dir) / CHECKPOINTS
    return {
        "history": {"path": Path(job_dir) / HISTORY, "extra": history_extra(cfg)},
        "best_weights": {"best_dir": checkpoints / BEST, "monitor_key": metric_key(cfg)},
        "last_checkpoint": {"dirpath": checkpoints, "filename": Path(LAST).stem},
    }


def build_callbacks(cfg: DictConfig, job_dir: Path) -> dict[str, L.Callback]:
    """conf/callbacks's entries (cfg.callbacks), instantiated, by name."""
    group = cfg.callbacks
    missing = [name for name in REQUIRED_CALLBACKS if name not in group]
    if missing:
        raise UserError(f"the callbacks group has no {', '.join(missing)}: the job reads its result from them; "
                        "keep them in conf/callbacks/<option>.yaml")
    args = job_args(cfg, job_dir)
    return {name: _instantiate(node, **args.get(name, {})) for name, node in group.items()}


def build_loggers(group: DictConfig | None, job_dir: Path, resume_step: int | None) -> dict[str, Logger]:
    """conf/logger's entries, by name. Every `_target_` there is a factory taking the job directory and
    `resume_step` (the optimizer step of the checkpoint a resumed fit continues from, None for a new fit)."""
    return {
        name: _instantiate(node, job_dir=Path(job_dir), resume_step=resume_step)
        for name, node in (group or {}).items()
    }


def _instantiate(node: DictConfig, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, raising what the target raised: Hydra wraps it in an InstantiationException whose
    first line names the target only (a UserError from a factory stays a one-line config error)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        if e.__cause__ is None:
            raise
        raise e.__cause__ from None


def check_loggers(group: DictConfig | None) -> None:
    """Import each logger's module: a tracker whose package is not installed says which extra to install
    (moirai_ft/train/trackers/), before the job loads any data or model. A module's `check(settings)`, where
    it has one, tells what else it can before training (a tracking server that does not answer)."""
    for node in (group or {}).values():
        module = importlib.import_module(str(node._target_).rpartition(".")[0])
        if callable(getattr(module, "check", None)):
            module.check(node)
