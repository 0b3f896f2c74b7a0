"""Experiment trackers (logger=mlflow, logger=wandb): Lightning's loggers, with what the job adds to them.

A tracker's factory (the `_target_` of its conf/logger/<name>.yaml) logs the job's overrides as its params;
Lightning logs the validation history while the job trains; after the test evaluation the job calls
log_job_result, which hands the result (test metrics, plots) to every logger that takes one. Each tracker's
module imports its package when it is chosen, so the trackers stay optional extras.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping

from lightning.pytorch.loggers import Logger


def job_params() -> dict[str, str]:
    """The job's overrides as Hydra's task overrides hold them (`lr=1e-05` -> {"lr": "1e-05"}), with a sweep's
    swept values; {} outside a Hydra run (a job started from Python)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    params = {}
    for override in HydraConfig.get().overrides.task:
        key, _, value = override.partition("=")
        params[key.lstrip("+~")] = value
    return params


def run_dir(job_dir: Path) -> Path:
    """The directory of the run a job belongs to: the sweep directory for a job of a `-m` sweep (its jobs
    share one tracker store), else the job's own directory."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        hc = HydraConfig.get()
        return (Path(hc.runtime.cwd) / hc.sweep.dir).resolve()  # joining keeps an absolute sweep.dir as it is
    return Path(job_dir).resolve()


def result_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """metrics.json's finite numbers, nested keys joined by "/" (test/crps, zero_shot_test/mase, ...)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(result_metrics(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = float(value)
    return flat


def plots(job_dir: Path) -> list[Path]:
    """The job's pictures (forecast.png, ...)."""
    return sorted(Path(job_dir).glob("*.png"))


def log_job_result(loggers: Iterable[Logger], metrics: Mapping[str, Any], job_dir: Path) -> None:
    """After the test evaluation (rank 0): the result to every logger that records one (the trackers)."""
    for logger in loggers:
        log_result = getattr(logger, "log_job_result", None)
        if log_result is not None:
            log_result(metrics, Path(job_dir))
