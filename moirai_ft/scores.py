"""What a forecast is scored by, defined once: the quantile levels a forecast holds, and each metric (the
per-item sums it is computed from, its value from their totals, its names in metrics.json). Torch-free,
below every user: the model families (quantile levels), the test evaluation, the bootstrap and the
forecast monitors (values; conf/monitors names the metric each is computed as), analyze (names).

Every metric is a function of sums over the evaluated items (MAE = sum|e| / count, WQL = mean over levels
of sum(quantile loss) / sum|y|, ...), so the test metrics (moirai_ft/evaluation/metrics.py) and each
bootstrap replicate (moirai_ft/evaluation/bootstrap.py) are one computation: `item_parts` per item,
summed over items (or over a replicate's resampled windows), then `metrics_from_sums`.

ADDING A METRIC: one `Metric` in METRICS below (and, when a part it needs is missing, one column in
`item_parts`). The job's metrics.json, the bootstrap intervals and analyze's table pick it up from here; a
validation monitor of it is one conf/monitors entry naming it as its `metric`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from jaxtyping import Float

# quantile levels kept per forecast: 0.1 and 0.9 bound the 80% band, 0.5 is the point forecast
QUANTILE_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MEDIAN = QUANTILE_LEVELS.index(0.5)
LOWER_80, UPPER_80 = QUANTILE_LEVELS.index(0.1), QUANTILE_LEVELS.index(0.9)

# part columns of item_parts, in order, then one quantile-loss sum per level
PARTS = ("count", "abs_err", "sq_err", "scaled_abs_err", "abs_label")
COUNT, ABS_ERR, SQ_ERR, SCALED_ABS_ERR, ABS_LABEL = range(len(PARTS))

Sums = Float[np.ndarray, "... part"]


@dataclass(frozen=True)
class Metric:
    name: str
    value: Callable[[Sums, np.ndarray], np.ndarray]  # (summed parts, observed count or NaN) -> value
    # where the test reports it: "norm" as `<name>_norm` on the normalised scale (the long-sequence-forecasting
    # convention), "orig" as `<name>` in original units
    scales: tuple[str, ...] = ("orig",)
    seasonal: bool = False  # needs the seasonal errors (MASE): left out where there are none


# in metrics.json's order: the normalised ones first, then the original-unit ones
METRICS: tuple[Metric, ...] = (
    Metric("mse", lambda s, n: s[..., SQ_ERR] / n, ("norm",)),
    Metric("mae", lambda s, n: s[..., ABS_ERR] / n, ("norm", "orig")),
    Metric("rmse", lambda s, n: np.sqrt(s[..., SQ_ERR] / n)),
    Metric("mase", lambda s, n: s[..., SCALED_ABS_ERR] / n, seasonal=True),
    # gluonts's MeanWeightedSumQuantileLoss, the CRPS approximation Moirai's paper reports as CRPS
    Metric("wql", lambda s, n: np.mean(s[..., len(PARTS):] / s[..., ABS_LABEL : ABS_LABEL + 1], axis=-1)),
)
METRIC_NAMES = tuple(m.name for m in METRICS)


def on_scale(scale: str) -> tuple[str, ...]:
    """The metrics the test reports on `scale` ("norm" or "orig")."""
    return tuple(m.name for m in METRICS if scale in m.scales)


def report_names(norm: dict[str, object], orig: dict[str, object]) -> dict[str, object]:
    """metrics.json's names for per-metric values on each scale: {"mse_norm": norm["mse"], ..., "wql": orig["wql"]}."""
    out = {f"{name}_norm": norm[name] for name in on_scale("norm")}
    out.update({name: orig[name] for name in on_scale("orig")})
    return out


def item_parts(
    label: Float[np.ndarray, "item time"],
    quantiles: Float[np.ndarray, "item level time"],
    seasonal_error: Float[np.ndarray, "item"] | None = None,
    levels: tuple[float, ...] = QUANTILE_LEVELS,
) -> Float[np.ndarray, "item part"]:
    """Per-item sums (PARTS, then the quantile loss per level) from which every metric follows.

    The point forecast is the median; NaN labels are excluded, a NaN forecast is not (it makes the
    metric NaN, so a broken model shows). gluonts's quantile loss: 2 |(y - pred) * (1{pred >= y} - q)|.
    """
    label = np.asarray(label, np.float64)
    quantiles = np.asarray(quantiles, np.float64)
    observed = np.isfinite(label)
    y = np.where(observed, label, 0.0)
    median = quantiles[:, levels.index(0.5)]
    abs_err = np.where(observed, np.abs(y - median), 0.0)
    sq_err = np.where(observed, (y - median) ** 2, 0.0)
    if seasonal_error is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = np.where(observed, abs_err / np.asarray(seasonal_error, np.float64)[:, None], 0.0)
    else:
        scaled = np.full_like(abs_err, np.nan)
    q = np.asarray(levels)[None, :, None]
    qloss = 2 * np.abs((y[:, None] - quantiles) * ((quantiles >= y[:, None]) - q))
    qloss = np.where(observed[:, None], qloss, 0.0).sum(axis=2)  # (item, level)
    cols = [observed.sum(1), abs_err.sum(1), sq_err.sum(1), scaled.sum(1), np.abs(y).sum(1)]
    return np.column_stack(cols + [qloss[:, i] for i in range(len(levels))])


def metrics_from_sums(sums: Sums, names: tuple[str, ...] = METRIC_NAMES) -> dict[str, np.ndarray]:
    """Each metric from summed parts (one row per bootstrap replicate, or one row); NaN without observations."""
    with np.errstate(divide="ignore", invalid="ignore"):
        n = np.where(sums[..., COUNT] > 0, sums[..., COUNT], np.nan)
        return {m.name: m.value(sums, n) for m in METRICS if m.name in names}
