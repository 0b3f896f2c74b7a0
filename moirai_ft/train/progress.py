"""Training progress: a terminal's bar (`SparseProgressBar`), and plain log lines for output that is not a
terminal (`LineProgress`, moirai_ft/console.py).

The bar reads the loss back from the device once per refresh, not every step (one of the host
synchronisations the fast path removes, moirai_ft/model/fast_path.py).

As log lines, one at most every `every_s` seconds, and one when training ends:
    train step 40/120 (33%): loss 0.5390, 212 samples/s, 0:00:23 left
A log file gets something a person can read and grep, and nothing per step. The loss is read from the
device only when a line is written (one host sync per line, not per step).
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from torch import Tensor

from moirai_ft.model.compat import open_progress_bars

log = logging.getLogger(__name__)
TRAIN_LOSS = "train/loss"  # the key the fine-tuner logs its step loss under


def _duration(seconds: float) -> str:
    return str(dt.timedelta(seconds=round(max(seconds, 0.0))))


class LineProgress(ProgressBar):
    """Lightning's progress-bar slot (so Lightning adds no bar of its own), filled with log lines.
    `samples_per_step`: windows in one optimizer step across all ranks (the global batch)."""

    def __init__(self, every_s: float, samples_per_step: int):
        super().__init__()
        self.every_s, self.samples_per_step = every_s, samples_per_step
        self._enabled = True
        self._start = self._last = 0.0
        self._first_step = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last = time.monotonic()
        self._first_step = trainer.global_step  # a resumed fit counts its own speed

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        now = time.monotonic()
        if self._enabled and trainer.is_global_zero and now - self._last >= self.every_s:
            self._last = now
            log.info(self.line(trainer, now))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._enabled and trainer.is_global_zero:
            log.info(self.line(trainer, time.monotonic(), done=True))

    def line(self, trainer: L.Trainer, now: float, done: bool = False) -> str:
        step, total = trainer.global_step, trainer.max_steps
        if total is None or total < 0:
            total = trainer.estimated_stepping_batches
        elapsed = now - self._start
        steps = step - self._first_step
        rate = steps / elapsed if elapsed > 0 else 0.0
        loss = trainer.callback_metrics.get(TRAIN_LOSS)
        loss_text = f"loss {float(loss):.4f}" if isinstance(loss, Tensor) else "loss -"
        speed = f"{rate * self.samples_per_step:.0f} samples/s"
        if done:
            return f"train done: {step} steps in {_duration(elapsed)}, {loss_text}, {speed}"
        total = int(total) if total and total != float("inf") else 0
        left = _duration((total - step) / rate) if rate > 0 and total else "?"
        share = f" ({100 * step / total:.0f}%)" if total else ""
        return f"train step {step}/{total or '?'}{share}: {loss_text}, {speed}, {left} left"


class SparseProgressBar(TQDMProgressBar):
    """A progress bar that reads the training loss from the device only when it redraws.

    Lightning converts every `prog_bar=True` metric to a Python number at the end of every batch, a host
    synchronisation per step whatever the refresh rate; the training loss is therefore logged without
    prog_bar, and this bar fetches it itself, once per refresh.
    """

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, int | str | float | dict[str, float]]:
        metrics = super().get_metrics(trainer, pl_module)
        loss = trainer.callback_metrics.get(TRAIN_LOSS)
        if isinstance(loss, Tensor):
            metrics[TRAIN_LOSS] = float(loss)
        return metrics

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # an interrupted fit (out of memory, then a retry at half the micro-batch) leaves its bars open, and
        # tqdm draws them again at exit, after everything else, like a job still running: clear them now
        for bar in open_progress_bars(self):
            if not bar.disable:
                bar.leave = False
                bar.close()
