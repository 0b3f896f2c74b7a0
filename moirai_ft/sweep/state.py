"""What a job directory says about its job, torch-free (analyze.py reads it): fingerprints, locks,
links to a twin's result, and the plan a sweep job follows.

Hydra has no resume (facebookresearch/hydra #1407, #3328): every `-m` run makes a new
`multirun/<date>/<time>/` and trains every job again. Here each job stores a fingerprint of its composed
config (hydra's own node and RUN_KEYS, how the sweep runs, left out; moirai_ft/config/root.py) in `fingerprint.json`. When a sweep
job starts it looks under `sweep_root` for a twin, a job directory with the same fingerprint, and:

- a completed (or diverged: a final, reproducible result) twin: the job is skipped;
- a twin that another process is running (it holds the twin's lock): skipped, it will finish there;
- a failed or unfinished twin: the job continues in the twin's directory, from its
  `checkpoints/last.ckpt` where one exists (the job resumes from it);
- no twin: the job trains in its own directory.

A skipped or continued job leaves `result_in.json` in its own directory, pointing at where its result
lives, so each configuration keeps one directory with its whole history, nothing is copied, and
`analyze.py` follows the pointer instead of counting a job twice. `resume=false` turns the lookup off.
sweep/runner.py carries the plan out; sweep/hydra_callbacks.py reports the sweep's outcomes.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

from moirai_ft import weights
from moirai_ft.artifacts import CHECKPOINTS, LAST, LOGS, METRICS, read_json, write_json_atomic
from moirai_ft.config.root import RUN_KEYS
from moirai_ft.result import FINAL

FINGERPRINT = "fingerprint.json"  # {"fingerprint": hex, "config": the resolved config it was taken from}
LINK = "result_in.json"  # in a skipped/continued job's own directory: where its result lives
LOCK = ".lock"  # flock-ed by the process running the job; the OS drops it when that process dies
PREVIOUS_SUFFIX = ".previous"  # a failed attempt's metrics.json / error.log, set aside on a rerun
REFUSED = "refused.json"  # beside another config's job: why a job was refused there (that job stays whole)

# a rerun would reproduce them: never retrained (pruned: stopped by the sweep's pruner, a result kept)
FINAL_STATUSES = FINAL  # lr_find: a range test's result


# ---------------------------------------------------------------------------------------------------
# fingerprints, locks, twins


def fingerprint(cfg: DictConfig) -> tuple[str, dict[str, Any]]:
    """Hash of the resolved job config (no hydra node, no sweep settings) and the config itself."""
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False, enum_to_str=True)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    for key in RUN_KEYS:
        container.pop(key, None)
    return _digest(container), container


def _digest(container: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(container, sort_keys=True, default=str).encode()).hexdigest()[:16]


# conf/pattern's keys that say what a pattern trains (moirai_ft/model/patterns.py), which jobs fingerprinted
# before them lack (the package's code then defined the shipped patterns by name, the same definitions)
PATTERN_DEFINITION = ("train", "freeze", "adapter")


def earlier_fingerprint(config: dict[str, Any]) -> str:
    """The fingerprint the same config had before patterns declared what they train: a job directory holding
    it is this config's twin, so a sweep started then resumes without training its jobs again."""
    pattern = config.get("pattern")
    if not isinstance(pattern, dict):
        return _digest(config)
    return _digest({**config, "pattern": {k: v for k, v in pattern.items() if k not in PATTERN_DEFINITION}})


def _read_key(path: Path, key: str) -> Any | None:
    """One key of a JSON object file; None when the file, the object or the key is missing."""
    data = read_json(path)
    return data.get(key) if isinstance(data, dict) else None


def read_fingerprint(job_dir: Path) -> str | None:
    value = _read_key(job_dir / FINGERPRINT, "fingerprint")
    return str(value) if value is not None else None


def read_status(job_dir: Path) -> str | None:
    """metrics.json's status; None when there is none or it cannot be read."""
    status = _read_key(job_dir / METRICS, "status")
    return str(status) if status is not None else None


class JobBusy(Exception):
    """Another process holds the job directory's lock."""


class JobLock:
    """An exclusive flock on `<job_dir>/.lock` for as long as a job runs in that directory."""

    def __init__(self, job_dir: Path, tries: int = 10):
        self.path = Path(job_dir) / LOCK
        self.tries = tries  # analyze.py's probe holds the lock for microseconds: retry a little
        self._fd: int | None = None

    def __enter__(self) -> JobLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        for _ in range(self.tries):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return self
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                time.sleep(0.1)
        os.close(fd)
        raise JobBusy(str(self.path.parent))

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def is_running(job_dir: Path) -> bool:
    """True while some process holds the job directory's lock (a job runs there now)."""
    path = Path(job_dir) / LOCK
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def job_dirs_below(root: Path) -> Iterator[Path]:
    """Every directory below root with a fingerprint.json (job directories do not nest)."""
    for dirpath, dirnames, filenames in os.walk(root):
        if FINGERPRINT in filenames:
            dirnames.clear()
            yield Path(dirpath)
        else:
            dirnames[:] = [d for d in dirnames if d not in (CHECKPOINTS, LOGS, ".hydra", "plots")]


class Action(str, Enum):
    run_here = "run_here"  # no twin: train in the job's own directory
    continue_twin = "continue_twin"  # a failed/unfinished twin: train on in its directory
    skip_done = "skip_done"  # a completed or diverged twin: nothing to do
    skip_running = "skip_running"  # another process runs the twin now


@dataclass(frozen=True)
class Plan:
    action: Action
    target: Path  # the directory that holds (or will hold) the job's result


def _newest(dirs: list[Path], name: str) -> Path:
    return max(dirs, key=lambda d: (d / name).stat().st_mtime if (d / name).exists() else 0.0)


def plan_job(fp: str, job_dir: Path, root: Path, earlier: str | None = None) -> Plan:
    """What a sweep job with fingerprint fp does, given the twins under root (see the module doc); a job
    directory fingerprinted `earlier` (earlier_fingerprint) is a twin too."""
    fps = {fp, earlier or fp}
    twins = [d for d in job_dirs_below(root) if read_fingerprint(d) in fps]
    if read_fingerprint(job_dir) in fps and job_dir.resolve() not in {t.resolve() for t in twins}:
        twins.append(job_dir)  # a sweep dir outside sweep_root, rerun in place
    # a finished twin whose weights were damaged since is retrained, not skipped
    done = [d for d in twins if read_status(d) in FINAL_STATUSES and weights.damage(d) is None]
    if done:
        return Plan(Action.skip_done, _newest(done, METRICS))
    others = [d for d in twins if d.resolve() != job_dir.resolve()]
    running = [d for d in others if is_running(d)]
    if running:
        return Plan(Action.skip_running, running[0])
    if not twins:
        return Plan(Action.run_here, job_dir)
    with_checkpoint = [d for d in twins if (d / CHECKPOINTS / LAST).is_file()]
    target = _newest(with_checkpoint or twins, FINGERPRINT)
    return Plan(Action.run_here if target.resolve() == job_dir.resolve() else Action.continue_twin, target)


# ---------------------------------------------------------------------------------------------------
# links and set-aside attempts


def write_link(job_dir: Path, target: Path, reason: str, fp: str) -> None:
    write_json_atomic(job_dir / LINK, {
        "result_in": os.path.relpath(target, job_dir), "reason": reason, "fingerprint": fp,
    })


def read_link(job_dir: Path) -> Path | None:
    """The directory a skipped/continued job's result lives in, or None."""
    rel = _read_key(Path(job_dir) / LINK, "result_in")
    return (Path(job_dir) / str(rel)).resolve() if rel is not None else None


def went_on(job_dir: Path) -> str | None:
    """"continued" or "rerun" when the job's result_in.json says it trained on in its twin's directory
    (from the twin's last checkpoint, or afresh), None for a skip."""
    reason = _read_key(Path(job_dir) / LINK, "reason")
    if reason is None:
        return None
    reason = str(reason)
    return "continued" if reason.startswith("continued") else "rerun" if reason == "rerun" else None


def set_aside_failure(target: Path) -> None:
    """A rerun of a failed job: keep the old error, but not where readers take it for this attempt's."""
    for name in (METRICS, "error.log"):
        path = target / name
        if path.exists():
            path.replace(path.with_name(path.stem + PREVIOUS_SUFFIX + path.suffix))


# ---------------------------------------------------------------------------------------------------
# what each job of a finished sweep left


@dataclass(frozen=True)
class Outcome:
    job_dir: Path  # the sweep's own job directory
    result_dir: Path  # where its result lives (a twin's directory for a skipped/continued job)
    status: str  # metrics.json's status; "running" (elsewhere); "missing" when there is no result
    error: str | None
    skipped: bool
    continued: str | None = None  # "continued" (from the twin's last checkpoint) or "rerun" in the twin's directory


def sweep_outcomes(sweep_dir: Path, since: float | None = None) -> list[Outcome]:
    """The result of each job directory in sweep_dir (only those Hydra started after `since`)."""
    outcomes = []
    for job_dir in sorted(p for p in Path(sweep_dir).iterdir() if (p / ".hydra").is_dir()):
        started = (job_dir / ".hydra" / "overrides.yaml")
        if since is not None and started.exists() and started.stat().st_mtime < since - 1.0:
            continue  # an earlier sweep that used the same hydra.sweep.dir
        linked = read_link(job_dir)
        result_dir = linked or job_dir
        refused = job_dir / REFUSED
        metrics = read_json(refused if refused.exists() else result_dir / METRICS)
        if isinstance(metrics, dict):
            status, error = str(metrics.get("status")), metrics.get("error")
        else:
            running = is_running(result_dir)
            status, error = ("running", None) if running else ("missing", "the job left no metrics.json")
        how = went_on(job_dir) if linked is not None else None
        outcomes.append(Outcome(job_dir, result_dir, status, error, skipped=linked is not None and how is None,
                                continued=how))
    return outcomes
