"""`monitor=val_nll|val_crps|val_mae`: the validation quantity that selects the best weights, stops
early, feeds the pruner and is the sweeper's objective.

val_nll is the training loss on the validation windows (MoiraiFineTuner logs it as val/loss). The
forecast monitors sample `monitor_samples` paths per validation window from the model being trained,
on the training device, with a fixed seed (every check, and the zero-shot check, draw the same random
numbers), and score them with the test metrics of moirai_ft/evaluation/metrics.py (the monitors and the
metric each is computed as: MONITORS in moirai_ft/scores.py):
- val_crps: WQL (mean weighted quantile loss over levels 0.1..0.9, the CRPS approximation Moirai's
  paper reports), in original units as the test's `wql`;
- val_mae: MAE of the median in original units, as the test's `mae`.
"""

from __future__ import annotations

import logging
import math

import lightning as L
import numpy as np
import torch

from moirai_ft.data.prepare import PreparedData
from moirai_ft.evaluation.forecast import forecast_quantiles
from moirai_ft.evaluation.scoring import eval_items, model_metrics
from moirai_ft.evaluation.metrics import seasonal_errors, seasonality
from moirai_ft.scores import MONITORS
from moirai_ft.values import plain

log = logging.getLogger(__name__)


def metric_key(monitor: str) -> str:
    """Where the monitored value is found in trainer.callback_metrics."""
    return MONITORS[str(plain(monitor))].key


class ForecastMonitor(L.Callback):
    """At the end of every validation check (the zero-shot one included), forecasts the validation
    windows and puts the monitored metric in trainer.callback_metrics, where History and BestWeights
    read it. Listed before them: callbacks run in list order. Every rank computes the same value
    (same windows, same seed), so no rank waits on another."""

    def __init__(self, monitor: str, data: PreparedData, batches: list[torch.Tensor], num_samples: int, seed: int):
        self.key, self.metric = MONITORS[monitor].key, MONITORS[monitor].metric
        assert self.metric is not None, f"{monitor} is the validation loss itself"
        self.data, self.batches, self.num_samples, self.seed = data, batches, num_samples, seed
        ids = torch.cat(batches) if batches else torch.zeros(0, dtype=torch.long)
        self.items = eval_items(data.val, ids)
        self.seasonal = seasonal_errors(data.table.values, self.items.columns, self.items.starts,
                                        seasonality(data.table.freq))
        self.last_value: float | None = None  # of the latest check
        self.replayed_value: float | None = None  # this check's value, known already (moirai_ft/train/zero_shot.py)

    def value(self, module: torch.nn.Module) -> float:
        training = module.training
        module.eval()
        try:
            q = forecast_quantiles(module, self.data.val, self.batches, self.num_samples, self.seed, desc=self.key)
        finally:
            module.train(training)
        value = model_metrics(q, self.items, self.data, self.seasonal)[self.metric]
        return float(value) if np.isfinite(value) else math.nan

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = self.replayed_value if self.replayed_value is not None else self.value(pl_module.module)
        self.last_value = value
        trainer.callback_metrics[self.key] = torch.tensor(value)
        step = trainer.global_step  # 0 at the zero-shot check; the last step at job.validate_last_steps's
        for logger in trainer.loggers:
            logger.log_metrics({self.key: value}, step=step)


def monitor_callbacks(cfg, data: PreparedData, val_batches: list[torch.Tensor]) -> dict[str, L.Callback]:
    """{"forecast_monitor": ForecastMonitor} for a forecast monitor, {} for val_nll."""
    monitor = str(plain(cfg.monitor))
    if MONITORS[monitor].metric is None:
        return {}
    return {"forecast_monitor": ForecastMonitor(monitor, data, val_batches, cfg.monitor_samples, cfg.seed)}


def history_extra(cfg) -> dict[str, str]:
    """The history CSV's extra column for a forecast monitor: {"val_crps": "val/crps"}."""
    monitor = MONITORS[str(plain(cfg.monitor))]
    return {monitor.column: monitor.key} if monitor.metric is not None else {}
