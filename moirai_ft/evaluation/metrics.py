"""Forecast metrics, vectorised over all test windows at once, with gluonts's definitions.

The definitions are those of `gluonts.ev` (what uni2ts's evaluation reports), aggregated over every
observed target of every window (gluonts's `axis=None`):
- point forecast: the sample median, picked as gluonts's `SampleForecast.quantile` picks it
  (the sorted sample at round((num_samples - 1) * q), no interpolation);
- MASE: |error| / seasonal error, where the seasonal error of a window is the mean of
  |y[t] - y[t - m]| over the series' whole past before the forecast start (pairs with a missing value
  left out), m from the data's frequency (`gluonts.time_feature.get_seasonality`);
- WQL: mean over levels 0.1..0.9 of sum(quantile loss) / sum(|y|), gluonts's
  `MeanWeightedSumQuantileLoss`, the CRPS approximation Moirai's paper reports as CRPS.
Missing targets (NaN) are excluded from every sum and mean. tests/evaluation/test_metrics.py checks these
functions against gluonts's own `evaluate_forecasts` on the same arrays.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from gluonts.time_feature import get_seasonality
from jaxtyping import Float, Int
from torch import Tensor

from moirai_ft.evaluation.coverage import BANDS

log = logging.getLogger(__name__)

# quantile levels kept per forecast: 0.1 and 0.9 bound the 80% band, 0.5 is the point forecast
QUANTILE_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MEDIAN = QUANTILE_LEVELS.index(0.5)
LOWER_80, UPPER_80 = QUANTILE_LEVELS.index(0.1), QUANTILE_LEVELS.index(0.9)


def sample_quantiles(
    samples: Float[Tensor, "sample *rest"], levels: tuple[float, ...] = QUANTILE_LEVELS
) -> Float[Tensor, "level *rest"]:
    """Quantiles of sampled paths as gluonts's SampleForecast computes them (an order statistic)."""
    n = samples.shape[0]
    # np.round rounds half to even, as gluonts does; the index is plain Python, no host sync
    picks = [int(np.round((n - 1) * q)) for q in levels]
    ordered = samples.sort(dim=0).values
    return ordered[picks]


def seasonality(freq: str) -> int:
    """The seasonal period m of MASE for a pandas frequency string; 1 when the frequency is unknown."""
    try:
        return int(get_seasonality(freq))
    except (ValueError, KeyError, AttributeError):
        log.warning("frequency %r not recognised: MASE uses seasonal period 1", freq)
        return 1


def seasonal_errors(
    values: Float[np.ndarray, "time column"],
    columns: Int[np.ndarray, "item"],
    starts: Int[np.ndarray, "item"],
    m: int,
) -> Float[np.ndarray, "item"]:
    """Seasonal error of each item (column, forecast start) over the column's whole past [0, start).

    One cumulative sum per column makes every window O(1). gluonts falls back to m = 1 when the past
    is shorter than m; a past of exactly m steps has no pair and gives NaN, as in gluonts.
    """
    values = values.astype(np.float64)
    seasonal = np.full(len(columns), np.nan)
    for period in sorted({m, 1}):
        diff = np.abs(values[period:] - values[:-period])  # diff[k] pairs y[k + period] with y[k]
        valid = np.isfinite(diff)
        # cum[i] = sum of the first i pairs, i.e. of pairs that end before row i + period
        cum = np.vstack([np.zeros((1, values.shape[1])), np.cumsum(np.where(valid, diff, 0.0), axis=0)])
        count = np.vstack([np.zeros((1, values.shape[1])), np.cumsum(valid, axis=0)])
        use = (starts >= m) if period == m else (starts < m)
        pairs = np.clip(starts[use] - period, 0, None)
        with np.errstate(invalid="ignore", divide="ignore"):
            seasonal[use] = cum[pairs, columns[use]] / count[pairs, columns[use]]
    return seasonal


def forecast_metrics(
    label: Float[np.ndarray, "item time"],
    quantiles: Float[np.ndarray, "item level time"],
    seasonal_error: Float[np.ndarray, "item"] | None = None,
    levels: tuple[float, ...] = QUANTILE_LEVELS,
) -> dict[str, float]:
    """MAE, MSE, RMSE of the median and, given seasonal errors, MASE; WQL over `levels`.

    NaN labels are excluded; a NaN forecast is not (it makes the metric NaN, so a broken model shows).
    """
    label = np.asarray(label, np.float64)
    quantiles = np.asarray(quantiles, np.float64)
    observed = np.isfinite(label)
    n = int(observed.sum())
    if n == 0:
        return {k: math.nan for k in ("mae", "mse", "rmse", "mase", "wql")}
    y = np.where(observed, label, 0.0)
    median = quantiles[:, levels.index(0.5)]
    abs_err = np.where(observed, np.abs(y - median), 0.0)
    sq_err = np.where(observed, (y - median) ** 2, 0.0)
    out = {"mae": abs_err.sum() / n, "mse": sq_err.sum() / n}
    out["rmse"] = math.sqrt(out["mse"])
    if seasonal_error is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = np.where(observed, abs_err / np.asarray(seasonal_error, np.float64)[:, None], 0.0)
        out["mase"] = scaled.sum() / n
    q = np.asarray(levels)[None, :, None]
    pred = quantiles
    # gluonts's quantile loss: 2 |(y - pred) * (1{pred >= y} - q)|
    qloss = 2 * np.abs((y[:, None] - pred) * ((pred >= y[:, None]) - q))
    qloss = np.where(observed[:, None], qloss, 0.0).sum(axis=(0, 2))
    abs_label = np.abs(y).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        out["wql"] = float(np.mean(qloss / abs_label))
    return {k: float(v) for k, v in out.items()}


def rel_improvement(finetuned: dict[str, float], zero_shot: dict[str, float]) -> dict[str, float]:
    """(zero_shot - finetuned) / |zero_shot| per metric: positive means fine-tuning helped.

    The absolute value only matters for the validation NLL, which can be negative; for the error
    metrics (all >= 0) it is the plain (zero_shot - finetuned) / zero_shot. NaN when undefined.
    """
    out: dict[str, float] = {}
    for name, zs in zero_shot.items():
        if name in BANDS:  # coverage is no loss: closer to the nominal level is better, not lower
            continue
        ft = finetuned.get(name, math.nan)
        ok = zs is not None and ft is not None and math.isfinite(zs) and math.isfinite(ft) and zs != 0
        out[name] = (zs - ft) / abs(zs) if ok else math.nan
    return out
