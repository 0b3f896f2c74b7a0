"""Empirical coverage of the forecast's central bands: does the 80% band hold 80% of what happened?

gluonts's definition (`gluonts.ev.metrics.Coverage`): Coverage[q] is the share of observed targets at or
below the q-quantile, `mean(y <= q_q)`. The band (lo, hi) covers Coverage[hi] - Coverage[lo], the share of
targets with q_lo < y <= q_hi for non-crossing quantiles. Means run over every observed target of every
item and horizon step (gluonts's `axis=None`); missing targets (NaN) are left out, as gluonts masks them.

A band is reported only where its levels are among the forecast's levels: every family keeps the deciles
(metrics.QUANTILE_LEVELS), so coverage_80 is always there and coverage_50 where 0.25 and 0.75 are kept.
Coverage is not a loss (0.95 is no better than 0.80 for an 80% band): it has no rel_improvement; the
gap to the nominal level is what to read. tests/evaluation/test_coverage.py checks it against gluonts.
"""

from __future__ import annotations

import math

import numpy as np
from jaxtyping import Float

# name -> (lower level, upper level); nominal coverage = upper - lower
BANDS: dict[str, tuple[float, float]] = {"coverage_80": (0.1, 0.9), "coverage_50": (0.25, 0.75)}


def nominal(name: str) -> float:
    lo, hi = BANDS[name]
    return round(hi - lo, 6)


def level_coverage(
    label: Float[np.ndarray, "item time"], quantile: Float[np.ndarray, "item time"]
) -> float:
    """gluonts's Coverage[q]: the share of observed targets at or below the forecast quantile."""
    label, quantile = np.asarray(label, np.float64), np.asarray(quantile, np.float64)
    observed = np.isfinite(label)
    n = int(observed.sum())
    if n == 0:
        return math.nan
    with np.errstate(invalid="ignore"):
        below = (label <= quantile) & observed
    return float(below.sum() / n)


def band_coverages(
    label: Float[np.ndarray, "item time"],
    quantiles: Float[np.ndarray, "item level time"],
    levels: tuple[float, ...],
) -> dict[str, float]:
    """{coverage_80: ..., coverage_50: ...} for the bands whose two levels the forecast has."""
    out: dict[str, float] = {}
    for name, (lo, hi) in BANDS.items():
        if lo in levels and hi in levels:
            upper = level_coverage(label, quantiles[:, levels.index(hi)])
            lower = level_coverage(label, quantiles[:, levels.index(lo)])
            out[name] = upper - lower
    return out
