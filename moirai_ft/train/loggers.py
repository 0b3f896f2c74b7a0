"""The job's file loggers (logs/metrics.csv and TensorBoard: logger=csv|tensorboard|many), exact across a resume.

Lightning's CSVLogger deletes metrics.csv whenever its directory is not empty, so a job resumed from
last.ckpt would keep only the rows logged after the restart. Here a resumed job keeps the rows logged
before the checkpoint it resumes from and appends the rest; the steps between that checkpoint and the
kill run again and are logged again, so their old rows go. A job that starts from scratch (a new job,
or the restart after running out of memory) starts a new file. TensorBoard's files are append-only:
its `purge_step` hides the older files' events from that step on, which TensorBoard's reader honours.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from moirai_ft.artifacts import LOGS, atomic_write
from moirai_ft.model.compat import ExperimentWriter, rank_zero_experiment


def checkpoint_step(path: Path) -> int:
    """The optimizer step a Lightning checkpoint was saved at (memory-mapped: the weights are not read)."""
    return int(torch.load(path, map_location="cpu", mmap=True, weights_only=False)["global_step"])


def keep_rows_before(path: Path, step: int) -> None:
    """Cut a metrics.csv to its rows logged before optimizer step `step` (atomically)."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], [r for r in reader if int(r["step"]) < step]
    with atomic_write(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


class _AppendingWriter(ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if os.path.isfile(self.metrics_file_path):  # the columns so far, or the first new row rewrites without them
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))

    def _check_log_dir_exists(self) -> None:  # Lightning's deletes metrics.csv here; it was cut already
        pass


class ResumableCSVLogger(CSVLogger):
    """CSVLogger that appends to the rows logged before `resume_step` (None: a new file)."""

    def __init__(self, save_dir: Path, resume_step: int | None):
        super().__init__(save_dir, name=LOGS, version="")
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            metrics_csv = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
            if self.resume_step is None:
                metrics_csv.unlink(missing_ok=True)
            else:
                keep_rows_before(metrics_csv, self.resume_step)
            self._fs.makedirs(self.log_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


# conf/logger's factories (moirai_ft/train/from_config.py build_loggers passes the job's runtime arguments)


def csv_logger(job_dir: Path, resume_step: int | None) -> CSVLogger:
    """logs/metrics.csv, its rows before `resume_step` kept on a resume."""
    return ResumableCSVLogger(job_dir, resume_step)


def tensorboard_logger(job_dir: Path, resume_step: int | None) -> TensorBoardLogger:
    # TensorBoard hides the earlier files' events from purge_step on (a fresh start: all of them)
    return TensorBoardLogger(job_dir, name=LOGS, version="", default_hp_metric=False, purge_step=resume_step or 0)
