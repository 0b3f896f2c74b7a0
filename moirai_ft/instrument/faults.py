"""Fault injection for the reliability tests: faults a CPU test machine cannot produce for real.

`InjectFaults` is a Lightning callback handed to a job explicitly (`run(cfg, job_dir, {"faults": ...})`);
the training code knows nothing of it. For a `train.py` subprocess the entry points build it from the
environment (`from_environment`), the one channel into a process a test starts. Never set these
variables outside tests:
- MOIRAI_FT_INJECT_OOM_ABOVE=N: a training micro-batch of more than N windows raises CUDA's
  out-of-memory error, as a GPU too small for that batch would.
- `oom_after_steps=N` (callback only): the first attempt runs out of memory when optimizer step N begins,
  after N steps changed the weights; the retry at half the micro-batch runs clean.
- MOIRAI_FT_INJECT_KILL_AT_STEP=N: the process SIGKILLs itself when optimizer step N begins, as a
  node failure or the OOM killer would, at a reproducible moment.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, Mapping

import lightning as L
import torch

OOM_ABOVE = "MOIRAI_FT_INJECT_OOM_ABOVE"
KILL_AT_STEP = "MOIRAI_FT_INJECT_KILL_AT_STEP"
PAUSE_AT_STEP = "MOIRAI_FT_INJECT_PAUSE_AT_STEP"
PAUSE_ONCE = "MOIRAI_FT_INJECT_PAUSE_ONCE"
PAUSE_LIMIT_S = 900  # a pause nobody ends still ends


class InjectFaults(L.Callback):
    """Before each training micro-batch: out of memory above `oom_above` windows, SIGKILL at optimizer
    step `kill_at_step` (None: that fault is off)."""

    def __init__(self, oom_above: int | None = None, kill_at_step: int | None = None,
                 oom_after_steps: int | None = None, pause_at_step: int | None = None, pause_once: str | None = None):
        self.oom_above = oom_above
        self.kill_at_step = kill_at_step
        self.oom_after_steps = oom_after_steps
        self.pause_at_step, self.pause_once = pause_at_step, pause_once

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        micro_batch = pl_module.train_order.batch_size  # every training batch is full (IndexBatches)
        if self.oom_above is not None and micro_batch > self.oom_above:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected: micro-batch {micro_batch} > {self.oom_above})")
        if trainer.accumulate_grad_batches == 1 and trainer.global_step == self.oom_after_steps:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected at step {self.oom_after_steps})")
        if self.kill_at_step is not None and trainer.global_step == self.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.pause_at_step is not None and trainer.global_step == self.pause_at_step and self._first_to_pause(trainer):
            deadline = time.monotonic() + PAUSE_LIMIT_S
            while time.monotonic() < deadline:
                time.sleep(1)

    def _first_to_pause(self, trainer: L.Trainer) -> bool:
        try:
            fd = os.open(self.pause_once, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(str(Path(trainer.default_root_dir).resolve()))
        return True


def from_environment(environ: Mapping[str, str] = os.environ) -> dict[str, L.Callback]:
    """The faults the environment arms, as extra callbacks for a job ({} when none is set)."""
    oom_above, kill_at_step, pause_at_step = (int(environ[k]) if environ.get(k) else None
                                              for k in (OOM_ABOVE, KILL_AT_STEP, PAUSE_AT_STEP))
    if pause_at_step is not None and not environ.get(PAUSE_ONCE):
        pause_at_step = None
    if oom_above is None and kill_at_step is None and pause_at_step is None:
        return {}
    return {"faults": InjectFaults(oom_above, kill_at_step, pause_at_step=pause_at_step, pause_once=environ.get(PAUSE_ONCE))}
