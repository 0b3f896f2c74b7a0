"""Is an improvement over zero-shot real? A paired bootstrap over test windows.

Every forecast metric is a function of sums over the evaluated items (moirai_ft/scores.py: MAE =
sum|e| / count, WQL = mean over levels of sum(quantile loss) / sum|y|, ...). `item_parts` keeps those sums
per item, so a bootstrap replicate is one weighted sum per part: resampling windows with replacement is a
multinomial count per window, and `counts @ parts` gives every replicate at once.

Paired: the fine-tuned and the zero-shot model are scored on the same resampled windows in each
replicate, so the interval is that of the relative improvement itself, not of two separate metrics.
Items of one window (the variates of a mode=M window) are resampled together (`groups`).

Pure numpy, no torch.
"""

from __future__ import annotations

import math

import numpy as np
from jaxtyping import Float, Int

from moirai_ft.scores import METRIC_NAMES, metrics_from_sums

LEVEL = 0.95
N_BOOT = 1000


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
        return {k: None for k in (names or METRIC_NAMES)}
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
