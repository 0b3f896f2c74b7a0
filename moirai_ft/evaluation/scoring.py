"""The test metrics of one model's forecast (moirai_ft/evaluation/metrics.py) on the normalised scale and
in original units, and the bootstrap intervals of the fine-tuned model's improvement over zero-shot."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float, Int
from torch import Tensor

from moirai_ft.data.prepare import PreparedData
from moirai_ft.data.windows import Windows
from moirai_ft.evaluation.bootstrap import relative_improvement_interval
from moirai_ft.evaluation.coverage import band_coverages
from moirai_ft.evaluation.metrics import forecast_metrics
from moirai_ft.scores import QUANTILE_LEVELS, item_parts, on_scale, report_names


@dataclass
class EvalItems:
    """The evaluated series windows: one per (test window, variate)."""

    columns: Int[np.ndarray, "item"]
    starts: Int[np.ndarray, "item"]  # forecast start row in the table


def eval_items(windows: Windows, ids: Int[Tensor, "n"]) -> EvalItems:
    col, start = windows.locate(ids.to(windows.starts.device))
    v = windows.num_variates
    if windows.mode == "S":
        return EvalItems(col.cpu().numpy(), start.cpu().numpy())
    # mode M: each window holds every forecast column, item order (window, variate) as forecast_quantiles
    return EvalItems(np.tile(windows.forecast_columns.cpu().numpy(), len(ids)), np.repeat(start.cpu().numpy(), v))


def model_metrics(
    q_norm: Float[np.ndarray, "item level pred"], items: EvalItems, data: PreparedData, seasonal: Float[np.ndarray, "item"]
) -> dict[str, float]:
    """Each metric on the scales moirai_ft/scores.py gives it: mse_norm, mae_norm (normalised, the
    long-sequence-forecasting convention), mae, rmse, mase, wql (original units)."""
    rows = items.starts[:, None] + np.arange(q_norm.shape[-1])
    cols = items.columns[:, None]
    norm = forecast_metrics(data.normalized[rows, cols], q_norm)
    q_orig = q_norm * data.std[items.columns][:, None, None] + data.mean[items.columns][:, None, None]
    orig = forecast_metrics(data.table.values[rows, cols], q_orig, seasonal)
    # gluonts's Coverage of the central bands (moirai_ft/evaluation/coverage.py): not a loss, no rel_improvement
    return {**report_names(norm, orig), **band_coverages(data.table.values[rows, cols], q_orig, QUANTILE_LEVELS)}


def improvement_intervals(
    quantiles: dict[str, Float[np.ndarray, "item level pred"]], items: EvalItems, data: PreparedData,
    seasonal: Float[np.ndarray, "item"], windows: int, seed: int,
) -> dict[str, list[float] | None]:
    """Per test metric, the 95% paired bootstrap interval of the relative improvement over zero-shot,
    resampling test windows (moirai_ft/evaluation/bootstrap.py); the names of model_metrics."""
    rows = items.starts[:, None] + np.arange(quantiles["zero-shot"].shape[-1])
    cols = items.columns[:, None]
    groups = np.repeat(np.arange(windows), len(items.starts) // max(windows, 1))  # mode M: a window's variates together
    scale = lambda q: q * data.std[items.columns][:, None, None] + data.mean[items.columns][:, None, None]  # noqa: E731
    norm = [item_parts(data.normalized[rows, cols], quantiles[k]) for k in ("fine-tuned", "zero-shot")]
    orig = [item_parts(data.table.values[rows, cols], scale(quantiles[k]), seasonal) for k in ("fine-tuned", "zero-shot")]
    on_norm = relative_improvement_interval(*norm, groups=groups, seed=seed, names=on_scale("norm"))
    on_orig = relative_improvement_interval(*orig, groups=groups, seed=seed, names=on_scale("orig"))
    return report_names(on_norm, on_orig)
