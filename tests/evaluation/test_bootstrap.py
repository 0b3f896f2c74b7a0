"""The paired bootstrap of the relative improvement over zero-shot (moirai_ft/evaluation/bootstrap.py)."""

from __future__ import annotations

import numpy as np
import pytest

from moirai_ft.evaluation.bootstrap import relative_improvement_interval, significant
from moirai_ft.evaluation.metrics import forecast_metrics
from moirai_ft.scores import QUANTILE_LEVELS, item_parts, metrics_from_sums


def forecasts(rng: np.random.Generator, items: int, horizon: int, error_scale: float, noise: np.ndarray):
    """Quantile forecasts around a truth: the median off by `error_scale` x a shared noise pattern."""
    truth = rng.normal(10.0, 1.0, (items, horizon))
    spread = np.linspace(-1, 1, len(QUANTILE_LEVELS))[None, :, None]
    return truth, truth[:, None, :] + error_scale * noise[:, None, :] + 0.1 * spread


def test_parts_give_back_the_metrics_of_metrics_py():
    rng = np.random.default_rng(1)
    label = rng.normal(5, 2, (40, 12))
    label[3, 4] = np.nan  # a missing target is left out of both
    q = np.sort(label[:, None, :] + rng.normal(0, 1, (40, len(QUANTILE_LEVELS), 12)), axis=1)
    seasonal = rng.uniform(0.5, 2.0, 40)
    reference = forecast_metrics(label, q, seasonal)
    from_parts = metrics_from_sums(item_parts(label, q, seasonal).sum(0))
    for name in ("mae", "mse", "rmse", "mase", "wql"):
        assert float(from_parts[name]) == pytest.approx(reference[name], rel=1e-10)


def test_interval_covers_a_known_improvement_and_excludes_zero():
    rng = np.random.default_rng(0)
    noise = np.abs(rng.normal(0, 1, (300, 8)))
    truth, zs_q = forecasts(np.random.default_rng(5), 300, 8, 1.0, noise)
    _, ft_q = forecasts(np.random.default_rng(5), 300, 8, 0.8, noise)  # same truth, errors 20% smaller
    ci = relative_improvement_interval(item_parts(truth, ft_q), item_parts(truth, zs_q), names=("mae",), seed=3)
    lo, hi = ci["mae"]
    assert lo <= 0.2 <= hi  # the true relative improvement in MAE is 20%
    assert significant(ci["mae"]) is True


def test_no_real_difference_gives_an_interval_around_zero():
    rng = np.random.default_rng(2)
    truth = rng.normal(10, 1, (200, 8))
    a = truth[:, None, :] + rng.normal(0, 1, (200, 1, 8)) + np.linspace(-0.1, 0.1, 9)[None, :, None]
    b = truth[:, None, :] + rng.normal(0, 1, (200, 1, 8)) + np.linspace(-0.1, 0.1, 9)[None, :, None]
    ci = relative_improvement_interval(item_parts(truth, a), item_parts(truth, b), names=("mae", "wql"), seed=0)
    for name in ("mae", "wql"):
        assert ci[name][0] < 0 < ci[name][1], (name, ci[name])
        assert significant(ci[name]) is False


def test_same_seed_same_interval_and_windows_resampled_whole():
    rng = np.random.default_rng(4)
    truth = rng.normal(0, 1, (60, 4))
    a = truth[:, None, :] + rng.normal(0, 0.5, (60, 9, 4))
    b = truth[:, None, :] + rng.normal(0, 0.7, (60, 9, 4))
    pa, pb = item_parts(truth, np.sort(a, 1)), item_parts(truth, np.sort(b, 1))
    one = relative_improvement_interval(pa, pb, seed=11)
    assert one == relative_improvement_interval(pa, pb, seed=11)
    assert one != relative_improvement_interval(pa, pb, seed=12)
    # items of one window move together: 20 windows of 3 variates give other replicates than 60 windows
    grouped = relative_improvement_interval(pa, pb, groups=np.repeat(np.arange(20), 3), seed=11)
    assert grouped != one
    assert one["mase"] is None  # no seasonal errors given: no MASE interval
