"""The job's training throughput, a Lightning callback (reported as train_samples_per_s)."""

from __future__ import annotations

import time

import lightning as L
import torch


class Throughput(L.Callback):
    """Training samples per second, validation time excluded (synchronised at the boundaries only)."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.train_s = 0.0
        self.steps = 0
        self._t0: float | None = None

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync(pl_module)
        self._t0, self._step0 = time.perf_counter(), trainer.global_step

    def _stop(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._t0 is None:
            return
        self._sync(pl_module)
        self.train_s += time.perf_counter() - self._t0
        self.steps += trainer.global_step - self._step0
        self._t0 = None

    def on_train_start(self, trainer, pl_module):
        self._start(trainer, pl_module)

    def on_validation_start(self, trainer, pl_module):
        if trainer.state.fn == "fit":
            self._stop(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module):
        if trainer.state.fn == "fit" and not trainer.should_stop:
            self._start(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        self._stop(trainer, pl_module)

    @property
    def samples_per_s(self) -> float:
        return self.steps * self.batch_size / self.train_s if self.train_s > 0 else float("nan")
