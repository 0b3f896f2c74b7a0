"""`monitor=val_nll|val_crps|val_mae`: the validation quantity that selects the best weights, stops
early, feeds the pruner and is the sweeper's objective; each is an entry of conf/monitors (the registry
`monitors` of the config), read here.

val_nll is the training loss on the validation windows (MoiraiFineTuner logs it as val/loss). The
forecast monitors (entries with a `_target_`: ForecastMonitor) sample `monitor_samples` paths per
validation window from the model being trained, on the training device, with a fixed seed (every check,
and the zero-shot check, draw the same random numbers), and score them with the entry's `metric`, one of
the test metrics (moirai_ft/scores.py):
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
from hydra.utils import instantiate
from omegaconf import DictConfig

from moirai_ft.data.prepare import PreparedData
from moirai_ft.evaluation.forecast import forecast_quantiles
from moirai_ft.evaluation.scoring import eval_items, model_metrics
from moirai_ft.evaluation.metrics import seasonal_errors, seasonality
from moirai_ft.values import plain

log = logging.getLogger(__name__)


def monitor_entry(cfg: DictConfig) -> DictConfig:
    """The chosen monitor's entry of the registry (validate() checked the name exists)."""
    return cfg.monitors[str(plain(cfg.monitor))]


def is_forecast(cfg: DictConfig) -> bool:
    """Whether the chosen monitor forecasts the validation windows at every check (a `_target_` callback)."""
    return monitor_entry(cfg).get("_target_") is not None


def metric_key(cfg: DictConfig) -> str:
    """Where the monitored value is found in trainer.callback_metrics."""
    return str(monitor_entry(cfg).key)


class ForecastMonitor(L.Callback):
    """At the end of every validation check (the zero-shot one included), forecasts the validation
    windows and puts the monitored metric in trainer.callback_metrics, where History and BestWeights
    read it. Listed before them: callbacks run in list order. Every rank computes the same value
    (same windows, same seed), so no rank waits on another."""

    def __init__(self, key: str, metric: str, data: PreparedData, batches: list[torch.Tensor], num_samples: int,
                 seed: int, column: str | None = None):
        self.key, self.metric = key, metric  # column: the history CSV's (history_extra)
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
        step = trainer.global_step  # 0 at the zero-shot check; the last step at fit.validate_last_steps's
        for logger in trainer.loggers:
            logger.log_metrics({self.key: value}, step=step)


def monitor_callbacks(cfg: DictConfig, data: PreparedData, val_batches: list[torch.Tensor]) -> dict[str, L.Callback]:
    """{"forecast_monitor": the entry's callback} for a forecast monitor, {} for val_nll."""
    if not is_forecast(cfg):
        return {}
    # a partial first: the data and the batches go to the callback as they are, not through OmegaConf
    make = instantiate(monitor_entry(cfg), _partial_=True)
    return {"forecast_monitor": make(data=data, batches=val_batches, num_samples=cfg.monitor_samples, seed=cfg.seed)}


def history_extra(cfg: DictConfig) -> dict[str, str]:
    """The history CSV's extra column for a forecast monitor: {"val_crps": "val/crps"}."""
    entry = monitor_entry(cfg)
    return {str(entry.column): str(entry.key)} if is_forecast(cfg) else {}
