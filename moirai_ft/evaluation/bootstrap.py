"""Is an improvement over zero-shot real? A paired bootstrap over test windows.

Every forecast metric of moirai_ft/evaluation/metrics.py is a function of sums over the evaluated items
(MAE = sum|e| / count, WQL = mean over levels of sum(quantile loss) / sum|y|, ...). `item_parts` keeps
those sums per item, so a bootstrap replicate is one weighted sum per part: resampling windows with
replacement is a multinomial count per window, and `counts @ parts` gives every replicate at once.

Paired: the fine-tuned and the zero-shot model are scored on the same resampled windows in each
replicate, so the interval is that of the relative improvement itself, not of two separate metrics.
Items of one window (the variates of a mode=M window) are resampled together (`groups`).

Pure numpy, no torch: the covariates' evaluation and analyze can use it as well.
"""

from __future__ import annotations

import math

import numpy as np
from jaxtyping import Float, Int

LEVEL = 0.95
N_BOOT = 1000

# part columns of item_parts, in order, then one quantile-loss sum per level
PARTS = ("count", "abs_err", "sq_err", "scaled_abs_err", "abs_label")


def item_parts(
    label: Float[np.ndarray, "item time"],
    quantiles: Float[np.ndarray, "item level time"],
    seasonal_error: Float[np.ndarray, "item"] | None = None,
    levels: tuple[float, ...] | None = None,
) -> Float[np.ndarray, "item part"]:
    """Per-item sums from which metrics.forecast_metrics's values follow (see `metrics_from_sums`).
    `levels`: those of `quantiles`, metrics.QUANTILE_LEVELS by default."""
    if levels is None:  # imported here: analyze.py reads `significant` from this module without torch
        from moirai_ft.evaluation.metrics import QUANTILE_LEVELS as levels
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


def metrics_from_sums(sums: Float[np.ndarray, "... part"]) -> dict[str, Float[np.ndarray, "..."]]:
    """mae, mse, rmse, mase, wql from summed parts (one row per bootstrap replicate, or one row)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        n = np.where(sums[..., 0] > 0, sums[..., 0], np.nan)
        mse = sums[..., 2] / n
        qloss = sums[..., len(PARTS):]
        return {
            "mae": sums[..., 1] / n,
            "mse": mse,
            "rmse": np.sqrt(mse),
            "mase": sums[..., 3] / n,
            "wql": np.mean(qloss / sums[..., len(PARTS) - 1 : len(PARTS)], axis=-1),
        }


def replicate_counts(n_groups: int, n_boot: int = N_BOOT, seed: int = 0) -> Int[np.ndarray, "boot group"]:
    """How often each group is drawn in each replicate (seeded: the same seed, the same replicates)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)


def relative_improvement_interval(
    finetuned: Float[np.ndarray, "item part"],
    zero_shot: Float[np.ndarray, "item part"],
    groups: Int[np.ndarray, "item"] | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
    names: tuple[str, ...] | None = None,
) -> dict[str, list[float] | None]:
    """Per metric, the `level` percentile interval of (zero_shot - finetuned) / |zero_shot| over paired
    bootstrap replicates of the windows (`groups[i]`: the window of item i; default: one item a window).
    None for a metric undefined on these items (no seasonal errors: no mase)."""
    finetuned, zero_shot = np.asarray(finetuned, np.float64), np.asarray(zero_shot, np.float64)
    if groups is None:
        groups = np.arange(len(finetuned))
    _, groups = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    out: dict[str, list[float] | None] = {}
    if n_groups == 0:
        return {k: None for k in (names or ("mae", "mse", "rmse", "mase", "wql"))}
    # items summed per window first: a replicate draws whole windows
    per_group = [np.zeros((n_groups, finetuned.shape[1])) for _ in range(2)]
    np.add.at(per_group[0], groups, finetuned)
    np.add.at(per_group[1], groups, zero_shot)
    counts = replicate_counts(n_groups, n_boot, seed).astype(np.float64)
    ft = metrics_from_sums(counts @ per_group[0])
    zs = metrics_from_sums(counts @ per_group[1])
    alpha = (1.0 - level) / 2
    for name in names or tuple(ft):
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = (zs[name] - ft[name]) / np.abs(zs[name])
        rel = rel[np.isfinite(rel)]
        if len(rel) < 0.9 * n_boot:  # undefined on most replicates: no interval worth printing
            out[name] = None
            continue
        lo, hi = np.quantile(rel, [alpha, 1.0 - alpha])
        out[name] = [float(lo), float(hi)]
    return out


def significant(interval: list[float] | tuple[float, float] | None) -> bool | None:
    """True when the interval excludes 0, False when it includes it, None when there is no interval."""
    if interval is None or len(interval) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in interval):
        return None
    lo, hi = interval
    return not (lo <= 0.0 <= hi)
