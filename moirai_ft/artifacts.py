"""Reading and writing a job's result files. metrics.json is written atomically (temp file, fsync,
rename), so a reader sees either the previous complete file or the new complete file, never half."""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from omegaconf import DictConfig, OmegaConf

from moirai_ft.values import plain

METRICS = "metrics.json"
HISTORY = "training_history.csv"
CHECKPOINTS = "checkpoints"
BEST = "best"  # checkpoints/best: save_pretrained directory of the selected weights
LAST = "last.ckpt"  # checkpoints/last.ckpt: Lightning checkpoint to resume from
LOGS = "logs"  # logs/metrics.csv (Lightning's CSV log, every logged step) and TensorBoard's events
CONFIG = "config.yaml"  # resolved config written by run_job when Hydra wrote none
HYDRA_CONFIG = Path(".hydra") / "config.yaml"


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


@contextmanager
def atomic_write(path: Path, newline: str | None = None) -> Iterator[IO[str]]:
    """A text file written whole or not at all: written to a temp file beside `path`, flushed to disk
    (fsync) and renamed over `path`, so a reader or a crash sees the old file or the new one, never half.
    Nothing is renamed if the block raises."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    with atomic_write(path) as f:
        json.dump(_clean(data), f, indent=2, sort_keys=False)


def read_json(path: Path) -> Any | None:
    """A JSON file's content, or None when it is missing or not (yet, or any longer) valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The fields that place a job in a table, whatever its outcome. Enum choices as their value
    ("constant"), not str(enum) ("SchedulerName.constant"): tables group jobs by it."""

    keys = {"model": "model.name", "pattern": "pattern.name", "lr": "lr", "scheduler": "scheduler.name"}
    return {field: plain(OmegaConf.select(cfg, key)) for field, key in keys.items()}


def read_metrics(job_dir: Path) -> dict[str, Any] | None:
    """The job's metrics, or None if there is no complete metrics.json."""
    data = read_json(Path(job_dir) / METRICS)
    return data if isinstance(data, dict) else None


def unwritable(directory: Path) -> str | None:
    """Why `directory` cannot hold a job's files (created if missing), or None if it can."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write_probe.{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        return e.strerror or type(e).__name__
    return None
