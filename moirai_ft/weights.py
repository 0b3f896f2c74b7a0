"""Whether a job's selected weights (checkpoints/best) are still the ones it wrote.

run_job records `best_checksum`, a sha256 over the files of checkpoints/best, in metrics.json. A file cut
short (a full disk, a copy interrupted) or edited since no longer matches, and then:
- analyze.py marks the job `damaged` and neither ranks nor recommends it;
- a rerun of the sweep retrains it instead of skipping it as completed (moirai_ft/sweep);
- `python -m moirai_ft.evaluate <job_dir>` and `model.checkpoint=<job_dir>` refuse it in one line.

Torch-free, so analyze.py can use it.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from moirai_ft.artifacts import BEST, CHECKPOINTS, HISTORY, METRICS, read_metrics
from moirai_ft.errors import UserError

CHECKSUM = "best_checksum"  # metrics.json key
CHUNK = 1 << 20


def best_dir(job_dir: Path) -> Path:
    return Path(job_dir) / CHECKPOINTS / BEST


def checksum(directory: Path) -> str | None:
    """sha256 over the names and bytes of every file in `directory` (sorted); None if there is none."""
    directory = Path(directory)
    files = sorted(p for p in directory.rglob("*") if p.is_file()) if directory.is_dir() else []
    if not files:
        return None
    h = hashlib.sha256()
    for path in files:
        h.update(path.relative_to(directory).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
    return h.hexdigest()


def _recorded(job_dir: Path) -> str | None:
    metrics = read_metrics(job_dir)
    value = metrics.get(CHECKSUM) if metrics is not None else None
    return str(value) if value else None


def damage(job_dir: Path, metrics: dict[str, Any] | None = None) -> str | None:
    """Why the job's checkpoints/best is not what it recorded, or None when it matches. Also None when
    there is nothing to compare: no checksum recorded (an older job) or no checkpoints/ directory at all
    (results copied without their weights, to analyze elsewhere)."""
    expected = (metrics or {}).get(CHECKSUM) if metrics is not None else _recorded(job_dir)
    if not expected or not (Path(job_dir) / CHECKPOINTS).is_dir():
        return None
    directory = best_dir(job_dir)
    if checksum(directory) != expected:
        return f"{directory} no longer matches the checksum recorded in {METRICS}"
    return None


def check(job_dir: Path) -> None:
    """UserError when the job's selected weights are damaged."""
    if why := damage(job_dir):
        raise UserError(f"{why}: the weights are damaged; retrain the job (rerun its sweep or train.py command)")


def discard_damaged(job_dir: Path) -> bool:
    """Before a rerun: a job whose weights are damaged starts afresh (its last.ckpt would resume a
    finished fit, and its history describes weights that are gone). Returns whether it did."""
    if damage(job_dir) is None:
        return False
    shutil.rmtree(Path(job_dir) / CHECKPOINTS, ignore_errors=True)
    (Path(job_dir) / HISTORY).unlink(missing_ok=True)
    return True


def resolve_checkpoint(path: Path) -> Path:
    """model.checkpoint may name a job directory: its checkpoints/best, verified."""
    path = Path(path)
    if (path / "config.json").is_file() or not best_dir(path).is_dir():
        return path
    check(path)
    return best_dir(path)
