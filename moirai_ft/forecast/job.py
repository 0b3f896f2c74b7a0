"""Which job forecasts, and whether it can: a job directory as given, or the job `analyze.py` ranks first
in a sweep (or a root above several), by the same `--metric` rule (`rank_by`).

A job forecasts when its status is `completed`, its checkpoints/best still matches the checksum it recorded
(moirai_ft/weights.py), and it left the config and normalization.json its inputs are rebuilt from.
Everything here is checked before any model loads; torch-free.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from moirai_ft import weights
from moirai_ft.analysis.jobs import State
from moirai_ft.analysis.report import analyze
from moirai_ft.artifacts import CONFIG, HYDRA_CONFIG, METRICS, read_json, read_metrics
from moirai_ft.config.saved import load_job_config
from moirai_ft.data.roles import KNOWN, PAST, TARGET
from moirai_ft.errors import UserError
from moirai_ft.result import Status
from moirai_ft.sweep.state import LINK, read_link

NORMALIZATION = "normalization.json"  # written by the job: columns, roles, train mean/std, frequency


@dataclass(frozen=True)
class ForecastJob:
    """A finished job, as far as forecasting needs it: where it is, its config, and its columns' roles and
    train statistics (forecasts go back to original units with the job's own mean and std)."""

    path: Path
    config: DictConfig
    metrics: dict[str, Any]
    columns: tuple[str, ...]
    roles: tuple[str, ...]  # per column: target, known_covariate or past_covariate
    mean: np.ndarray
    std: np.ndarray
    freq: str

    def named(self, role: str) -> list[str]:
        return [c for c, r in zip(self.columns, self.roles) if r == role]

    @property
    def targets(self) -> list[str]:
        return self.named(TARGET)

    @property
    def known(self) -> list[str]:
        return self.named(KNOWN)

    @property
    def past(self) -> list[str]:
        return self.named(PAST)


def is_job_dir(path: Path) -> bool:
    return any((path / f).is_file() for f in (METRICS, LINK, CONFIG, HYDRA_CONFIG))


def best_job(root: Path, rank_by: str) -> Path:
    """The completed job analyze ranks first below `root` by `rank_by` (its --metric)."""
    try:
        report = analyze(root, rank_by)
    except UserError as e:  # analyze's words are its command line's
        raise UserError(str(e).replace("--metric ", "rank_by=").replace("analyze.py", "job=")) from None
    for job in report.jobs:
        if job.state == State.completed:
            return job.path
    states = Counter(j.state.value for j in report.jobs)
    found = ", ".join(f"{n} {s}" for s, n in states.items())
    raise UserError(f"no completed job below {root} ({found}); finish or rerun the sweep, or pass one job's directory as job=")


def resolve(path: Path | str, rank_by: str = "best_monitored") -> tuple[Path, bool]:
    """(job directory, whether it was selected from a sweep)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"job={path} does not exist; pass a job directory or a sweep directory (multirun/...)")
    if is_job_dir(path):
        linked = read_link(path) if (path / LINK).is_file() and not (path / METRICS).is_file() else None
        return (linked if linked is not None and linked.is_dir() else path), False
    return best_job(path, rank_by), True


def open_job(job_dir: Path) -> ForecastJob:
    """The job, refused in one line when it cannot forecast."""
    job_dir = Path(job_dir)
    metrics = read_metrics(job_dir)
    if metrics is None:
        raise UserError(f"{job_dir} has no complete {METRICS}: the job is running, was killed or never ran; "
                        "finish it (rerun its command) or pass another job")
    status = metrics.get("status")
    if status != Status.completed.value:
        why = f" ({metrics['error']})" if metrics.get("error") else ""
        raise UserError(f"{job_dir} is {status}{why}, not completed; forecast with a completed job")
    if not (weights.best_dir(job_dir) / "model.safetensors").is_file():
        raise UserError(f"{weights.best_dir(job_dir)} holds no weights; retrain the job")
    weights.check(job_dir)
    stats = read_json(job_dir / NORMALIZATION)
    if not isinstance(stats, dict) or not {"columns", "mean", "std", "freq"} <= set(stats):
        raise UserError(f"{job_dir / NORMALIZATION} is missing or unreadable; retrain the job")
    columns = tuple(stats["columns"])
    return ForecastJob(
        path=job_dir,
        config=load_job_config(job_dir),
        metrics=metrics,
        columns=columns,
        roles=tuple(stats.get("role") or [TARGET] * len(columns)),  # jobs from before roles: every column a target
        mean=np.asarray(stats["mean"], dtype=np.float32),
        std=np.asarray(stats["std"], dtype=np.float32),
        freq=str(stats["freq"]),
    )
