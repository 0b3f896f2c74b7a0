"""The zero-shot check that opens every fit (history row epoch -1), shared by the jobs of a sweep
(moirai_ft/evaluation/zero_shot.py says what is shared and under which key).

A job that finds the check's values published by another job still runs `trainer.validate`, so that every
callback sees the check as it would have (History writes the row, BestWeights saves the starting weights
as the best so far, the loggers get val/loss at step 0), but the validation windows are not forecast
again: the fine-tuner logs the published loss, the forecast monitor the published value, each exactly as
its own computation would have produced it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import lightning as L
from omegaconf import DictConfig

from moirai_ft.evaluation.zero_shot import SharedZeroShot, read_validation, validation_files
from moirai_ft.search.monitor import ForecastMonitor
from moirai_ft.train.callbacks import BestWeights
from moirai_ft.train.finetuner import MoiraiFineTuner


@contextmanager
def replaying(finetuner: MoiraiFineTuner, monitor: ForecastMonitor | None, val_loss: float,
              monitored: float | None) -> Iterator[None]:
    finetuner.replayed_val_loss = val_loss
    if monitor is not None:
        monitor.replayed_value = monitored
    try:
        yield
    finally:
        finetuner.replayed_val_loss = None
        if monitor is not None:
            monitor.replayed_value = None


def validate_zero_shot(cfg: DictConfig, trainer: L.Trainer, finetuner: MoiraiFineTuner, val_loader: Any,
                       callbacks: dict[str, L.Callback], shared: SharedZeroShot | None) -> None:
    """trainer.validate of the starting model; with `shared`, its values are read from the sweep's entry
    when one is published, else computed here and published."""
    if shared is None:
        trainer.validate(finetuner, val_loader, verbose=False)
        return
    monitor = callbacks.get("forecast_monitor")
    with shared.validation(cfg) as claim:
        if claim.found is not None:
            with replaying(finetuner, monitor, *read_validation(claim.found)):
                trainer.validate(finetuner, val_loader, verbose=False)
            return
        trainer.validate(finetuner, val_loader, verbose=False)
        best: BestWeights = callbacks["best_weights"]
        if best.zero_shot_val_loss is not None:  # the check ran (not interrupted)
            claim.publish(validation_files(best.zero_shot_val_loss,
                                           monitor.last_value if monitor is not None else None))
