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
functions against gluonts's own `evaluate_forecasts` on the same arrays. Each metric is defined once, in
moirai_ft/scores.py (its sums and its value); this module scores whole test sets with those definitions.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from gluonts.time_feature import get_seasonality
from jaxtyping import Float, Int

from moirai_ft.evaluation.coverage import BANDS
from moirai_ft.scores import METRICS, QUANTILE_LEVELS, item_parts, metrics_from_sums

log = logging.getLogger(__name__)


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
    """Every metric of moirai_ft/scores.py over all items (MASE only given seasonal errors): MAE, MSE, RMSE
    of the median, WQL over `levels`. NaN labels are excluded; a NaN forecast is not (it makes the metric
    NaN, so a broken model shows)."""
    names = tuple(m.name for m in METRICS if seasonal_error is not None or not m.seasonal)
    totals = item_parts(label, quantiles, seasonal_error, levels).sum(0)
    return {k: float(v) for k, v in metrics_from_sums(totals, names).items()}


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
