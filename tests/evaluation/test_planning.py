"""The job's blend and calibration keys (moirai_ft/evaluation/planning.py) on arrays: a blend whose
validation picks w = 0 is the zero-shot forecast exactly, w = 1 the fine-tuned one; the intervals against
each part and the calibration's before/after are recorded."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy.stats import norm

from moirai_ft.evaluation import calibration
from moirai_ft.evaluation.bootstrap import relative_improvement_interval
from moirai_ft.evaluation.coverage import band_coverages
from moirai_ft.evaluation.metrics import forecast_metrics
from moirai_ft.scores import QUANTILE_LEVELS, item_parts
from moirai_ft.evaluation.planning import Scorer, plan_forecasts

Z = norm.ppf(QUANTILE_LEVELS)[None, :, None]


def _cfg(**values):
    return OmegaConf.create({"monitor": "val_nll", "blend": True, "calibrate": "conformal",
                             "blend_grid": [0.0, 0.25, 0.5, 0.75, 1.0], **values})


def _split(rng, items=400, pred=6):
    mu = rng.normal(0, 2, (items, 1))
    label = mu + rng.standard_normal((items, pred))
    right = mu[:, :, None] + Z + np.zeros(pred)  # the targets' own quantiles
    wrong = right + 1.5  # biased
    return label, right, wrong


def _plan(cfg, good: str, tmp_path):
    """Validation and test where the model named `good` forecasts right and the other is biased."""
    rng = np.random.default_rng(0)
    (vl, vr, vw), (tl, tr, tw) = _split(rng), _split(rng)
    other = {"fine-tuned": "zero-shot", "zero-shot": "fine-tuned"}[good]
    val_q, test_q = {good: vr, other: vw}, {good: tr, other: tw}
    val, test = Scorer(vl, lambda q: forecast_metrics(vl, q)), Scorer(tl, lambda q: forecast_metrics(tl, q))
    tested = {k: {**test.metrics(q), **band_coverages(tl, q, QUANTILE_LEVELS)} for k, q in test_q.items()}
    test = Scorer(tl, lambda q: {**forecast_metrics(tl, q), **band_coverages(tl, q, QUANTILE_LEVELS)})

    def intervals(candidate, baseline):
        return relative_improvement_interval(item_parts(tl, candidate), item_parts(tl, baseline), seed=0,
                                             names=("mae", "wql"))

    return plan_forecasts(cfg, val, test, val_q, test_q, tested, intervals, tmp_path), tested


@pytest.mark.parametrize("good,weight", [("zero-shot", 0.0), ("fine-tuned", 1.0)])
def test_a_blend_at_an_end_of_the_grid_is_that_part_exactly(good, weight, tmp_path):
    out, tested = _plan(_cfg(), good, tmp_path)
    assert out["blend_weight"] == weight
    assert out["test_blend"] == tested[good]  # every metric, bit for bit
    other = "vs_zero_shot" if good == "fine-tuned" else "vs_fine_tuned"
    same = "vs_fine_tuned" if good == "fine-tuned" else "vs_zero_shot"
    # the interval against each part is recorded: nothing against itself, a real gain against the other
    assert out["blend_ci"][same]["wql"] == [0.0, 0.0]
    lo, hi = out["blend_ci"][other]["wql"]
    assert 0 < lo <= out["blend_rel_improvement"][other]["wql"] <= hi
    assert out["blend_validation"]["metric"] == "wql" and set(out["blend_validation"]["scores"]) == {
        "0", "0.25", "0.5", "0.75", "1"}


def test_the_monitor_chooses_the_weight_and_calibration_reports_before_and_after(tmp_path):
    out, tested = _plan(_cfg(monitor="val_mae", blend_grid=[0.0, 1.0]), "fine-tuned", tmp_path)
    assert out["blend_validation"]["metric"] == "mae" and set(out["blend_validation"]["scores"]) == {"0", "1"}
    summary = out["calibration"]["fine-tuned"]
    assert summary["test"]["coverage_80_before"] == tested["fine-tuned"]["coverage_80"]
    assert summary["test"]["coverage_80_after"] == out["test_calibrated"]["coverage_80"]
    assert summary["test"]["wql_after"] == out["test_calibrated"]["wql"]
    assert summary["validation"]["coverage_80_after"] >= 0.8
    saved = calibration.load(tmp_path)
    assert saved is not None and set(saved) == {"fine-tuned", "blend"}
    assert "test_blend_calibrated" in out


def test_options_off_add_nothing_and_remove_a_stale_calibration(tmp_path):
    calibration.save({}, tmp_path)
    out, _ = _plan(_cfg(blend=False, calibrate="none"), "fine-tuned", tmp_path)
    assert out == {}
    assert calibration.load(tmp_path) is None
