"""Conformal calibration (CQR per level and horizon step) on arrays whose coverage is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from moirai_ft.evaluation import calibration
from moirai_ft.evaluation.calibration import conformal_rank, fit_conformal
from moirai_ft.evaluation.coverage import band_coverages
from moirai_ft.evaluation.metrics import forecast_metrics
from moirai_ft.scores import QUANTILE_LEVELS

PRED = 8


def _overconfident(rng, items: int, width: float):
    """Targets N(mu, 1) and a forecast whose quantiles are those of N(mu + bias, width), a different bias
    and width per horizon step (what per-step calibration is for), with a few missing targets."""
    mu = rng.normal(0, 3, (items, 1))
    bias = np.linspace(-0.3, 0.3, PRED)
    scale = width * np.linspace(0.8, 1.2, PRED)
    label = mu + rng.standard_normal((items, PRED))
    label[rng.random(label.shape) < 0.02] = np.nan
    z = norm.ppf(QUANTILE_LEVELS)[None, :, None]
    quantiles = mu[:, :, None] + bias + z * scale
    return label, quantiles


def test_calibration_brings_a_60_percent_band_to_80_percent_on_new_windows():
    # a N(0, s) 80% band covers 60% of N(0, 1) targets when 1.2816 s = 0.8416
    width = norm.ppf(0.8) / norm.ppf(0.9)
    rng = np.random.default_rng(0)
    val_label, val_q = _overconfident(rng, 400, width)
    test_label, test_q = _overconfident(rng, 2000, width)
    before = band_coverages(test_label, test_q, QUANTILE_LEVELS)["coverage_80"]
    assert before == pytest.approx(0.6, abs=0.04), "precondition: the raw band covers about 60%"

    fit = fit_conformal(val_label, val_q, QUANTILE_LEVELS)
    # on the windows it was fitted on, it meets the nominal level
    assert band_coverages(val_label, fit.apply(val_q), QUANTILE_LEVELS)["coverage_80"] >= 0.8
    calibrated = fit.apply(test_q)
    after = band_coverages(test_label, calibrated, QUANTILE_LEVELS)["coverage_80"]
    assert after == pytest.approx(0.8, abs=0.03)
    # every level, not only the band's ends: each one-sided coverage lands near its level
    for j, tau in enumerate(QUANTILE_LEVELS):
        observed = np.isfinite(test_label)
        share = ((test_label <= calibrated[:, j]) & observed).sum() / observed.sum()
        assert share == pytest.approx(tau, abs=0.03), tau
    # a calibrated forecast of a mis-scaled model is also a better one
    assert forecast_metrics(test_label, calibrated)["wql"] < forecast_metrics(test_label, test_q)["wql"]
    assert np.all(np.diff(calibrated, axis=1) >= 0), "levels never cross"


def test_a_calibrated_forecast_is_left_alone():
    rng = np.random.default_rng(1)
    mu = rng.normal(0, 3, (3000, 1))
    label = mu + rng.standard_normal((3000, PRED))
    q = mu[:, :, None] + norm.ppf(QUANTILE_LEVELS)[None, :, None] + np.zeros(PRED)  # the targets' own quantiles
    fit = fit_conformal(label, q, QUANTILE_LEVELS)
    assert np.abs(fit.offsets).max() < 0.1


def test_conformal_ranks_are_the_finite_sample_ones():
    assert conformal_rank(9, 0.9) == 9 and conformal_rank(9, 0.1) == 1  # (n + 1) tau = 9, 1
    assert conformal_rank(10, 0.9) == 10 and conformal_rank(10, 0.1) == 1  # ceil(9.9), floor(1.1)
    assert conformal_rank(3, 0.9) == 3 and conformal_rank(3, 0.1) == 1  # clipped to the residuals there are


def test_saved_with_the_job_and_read_back(tmp_path):
    rng = np.random.default_rng(2)
    label, q = _overconfident(rng, 50, 0.5)
    fits = {"fine-tuned": fit_conformal(label, q, QUANTILE_LEVELS)}
    calibration.save(fits, tmp_path)
    back = calibration.load(tmp_path)
    assert back is not None and set(back) == {"fine-tuned"}
    np.testing.assert_array_equal(back["fine-tuned"].apply(q), fits["fine-tuned"].apply(q))
    assert calibration.load(tmp_path / "elsewhere") is None
    with pytest.raises(ValueError, match="calibration fitted on"):
        back["fine-tuned"].apply(q[:, :, :4])
