"""Hydra callbacks (conf/train.yaml's hydra.callbacks): refuse an unwritable output directory before any
job, and after a sweep say what ran, what was skipped and what failed.

The sweep's exit status travels in a file, not in this process's memory: SweepStatus writes
`<sweep dir>/sweep_status.json` (and `status_file`, where train.py asked for it), and train.py ends with
its `exit_code`. A launcher may run the jobs in other processes; the callback runs where the sweep began.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from moirai_ft.artifacts import read_json, unwritable, write_json_atomic
from moirai_ft.budget.clock import NOT_STARTED, budget_summary
from moirai_ft.sweep.state import FINAL_STATUSES, sweep_outcomes

SWEEP_STATUS = "sweep_status.json"  # {"sweep_dir", "exit_code", "counts": {status: n}, "failed": {job: error}}


class OutputDirCheck(Callback):
    """Refuse an output directory that cannot be written, in one line and before any job starts
    (Hydra's own failure is a traceback from inside its mkdir)."""

    @staticmethod
    def _check(directory: str, key: str) -> None:
        if reason := unwritable(Path(directory)):
            print(f"error: cannot write to the output directory {directory} ({reason}); "
                  f"pass a writable {key}=<dir>", file=sys.stderr)
            sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir, "hydra.sweep.dir")


class SweepStatus(Callback):
    """After every job of a sweep ran: a summary, and the status file whose exit_code is non-zero if
    any job failed (or left no result)."""

    def __init__(self, status_file: str | None = None) -> None:
        self.status_file = Path(status_file) if status_file else None
        self.started: float | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        outcomes = sweep_outcomes(sweep_dir, self.started)
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
        print(f"sweep {sweep_dir}: {len(outcomes)} job(s): " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        for o in outcomes:
            if o.skipped or o.continued:
                print(f"  {o.continued or 'skipped'} {o.job_dir.name}: {o.status} in {o.result_dir}")
        bad = [o for o in outcomes if o.status not in FINAL_STATUSES + ("running", NOT_STARTED)]
        for o in bad:
            print(f"  {o.status.upper()} {o.job_dir.name}: {o.error}")
        if line := budget_summary(sweep_dir, [o.job_dir.name for o in outcomes if o.status == NOT_STARTED]):
            print(line)
        print(f"next: python analyze.py {sweep_dir}")
        status = {"sweep_dir": str(sweep_dir), "exit_code": 1 if bad else 0, "counts": counts,
                  "failed": {o.job_dir.name: o.error for o in bad}}
        for path in filter(None, (sweep_dir / SWEEP_STATUS, self.status_file)):
            write_json_atomic(path, status)


# the variable conf/train.yaml's sweep_status callback reads its status_file from (train.py sets it)
STATUS_FILE_ENV = "MOIRAI_FT_SWEEP_STATUS_FILE"


def exit_code(status_file: Path) -> int:
    """The exit status a sweep's status file asks for; 0 when there is none (a single run: train.py's
    own exit covers it)."""
    status = read_json(Path(status_file))
    code = status.get("exit_code") if isinstance(status, dict) else None
    return code if isinstance(code, int) else 0
