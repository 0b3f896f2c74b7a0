"""The training progress bar: it reads the loss back from the device once per refresh, not every step
(one of the host synchronisations the fast path removes, moirai_ft/model/fast_path.py)."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from torch import Tensor

from moirai_ft.model.compat import open_progress_bars

TRAIN_LOSS = "train/loss"  # the key the fine-tuner logs its step loss under


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
