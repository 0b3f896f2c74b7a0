"""The fine-tuned/zero-shot blend on arrays: its parts at w = 0 and 1, the weight validation prefers."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

from moirai_ft.evaluation.blend import GRID, blend, choose_weight
from moirai_ft.evaluation.metrics import forecast_metrics
from moirai_ft.scores import QUANTILE_LEVELS

Z = norm.ppf(QUANTILE_LEVELS)[None, :, None]


def _forecasts(rng, items=300, pred=6):
    """Targets around mu; a zero-shot forecast biased up and a fine-tuned one biased down by as much."""
    mu = rng.normal(0, 2, (items, 1))
    label = mu + rng.standard_normal((items, pred))
    centre = mu[:, :, None] + Z + np.zeros(pred)
    return label, centre + 1.0, centre - 1.0


def _wql(label):
    return lambda q: forecast_metrics(label, q)["wql"]


def test_the_ends_of_the_grid_are_the_parts_bit_for_bit():
    rng = np.random.default_rng(0)
    _, zs, ft = _forecasts(rng)
    assert 0.0 in GRID and 1.0 in GRID
    assert blend(ft, zs, 0.0) is zs and blend(ft, zs, 1.0) is ft
    nan_ft = np.full_like(ft, np.nan)  # even a broken fine-tuned forecast leaves w = 0 the zero-shot one
    np.testing.assert_array_equal(blend(nan_ft, zs, 0.0), zs)
    np.testing.assert_allclose(blend(ft, zs, 0.5), zs - 1.0)


def test_validation_picks_the_weight_that_scores_best():
    rng = np.random.default_rng(1)
    label, zs, ft = _forecasts(rng)
    w, scores = choose_weight(ft, zs, _wql(label))
    assert w == 0.5, scores  # opposite biases cancel halfway
    assert set(scores) == {f"{g:g}" for g in GRID}
    exact = np.repeat(label[:, None, :], len(QUANTILE_LEVELS), axis=1)  # a model that knows the targets
    w0, _ = choose_weight(ft, exact, _wql(label))
    assert w0 == 0.0
    w1, _ = choose_weight(exact, zs, _wql(label))
    assert w1 == 1.0


def test_ties_keep_the_fine_tuned_model_and_nan_scores_do_not_win():
    rng = np.random.default_rng(2)
    label, zs, _ = _forecasts(rng)
    w, _ = choose_weight(zs, zs, _wql(label))  # fine-tuning changed nothing
    assert w == 1.0
    broken = np.full_like(zs, np.nan)
    w, scores = choose_weight(broken, zs, _wql(label))
    assert w == 0.0 and math.isnan(scores["1"])
