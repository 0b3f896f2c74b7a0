"""Band coverage against gluonts's Coverage metric, evaluated by gluonts on the same forecasts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from gluonts.dataset.split import split
from gluonts.ev.metrics import Coverage
from gluonts.model.evaluation import evaluate_forecasts
from gluonts.model.forecast import QuantileForecast, SampleForecast

from moirai_ft.evaluation.coverage import band_coverages, level_coverage, nominal
from moirai_ft.model.family import sample_quantiles
from moirai_ft.scores import QUANTILE_LEVELS
from tests.evaluation.test_metrics import FREQ, _series


def _test_windows(rng, time=700, columns=3, test_start=500, pred=24, windows=6):
    values = _series(rng, time, columns)
    start = pd.Period("2024-01-01 00:00", freq=FREQ)
    dataset = [{"start": start, "target": values[:, c], "item_id": str(c)} for c in range(columns)]
    _, template = split(dataset, offset=test_start)
    return values, start, template.generate_instances(prediction_length=pred, windows=windows, distance=pred)


def _reference(forecasts, test_data, levels) -> dict[float, float]:
    frame = evaluate_forecasts(forecasts, test_data=test_data, metrics=[Coverage(q) for q in levels], axis=None)
    return {q: float(frame.iloc[0][f"coverage[{q}]"]) for q in levels}


def test_band_coverage_equals_gluonts_coverage_on_sampled_paths():
    """Sample forecasts over NaN-holed series: our 80% band is gluonts's Coverage[0.9] - Coverage[0.1]."""
    rng = np.random.default_rng(3)
    values, start, test_data = _test_windows(rng)
    forecasts, labels, paths = [], [], []
    for entry in test_data.input:
        c, f = int(entry["item_id"]), len(entry["target"])
        truth = values[f : f + 24, c]
        samples = np.nan_to_num(truth, nan=10.0) + rng.normal(0, 1.5, (50, 24)) + rng.normal()
        forecasts.append(SampleForecast(samples=samples.astype(np.float32), start_date=start + f, item_id=str(c)))
        labels.append(truth)
        paths.append(samples.astype(np.float32))
    label = np.stack(labels)
    assert np.isnan(label).any(), "the fixture must hold missing targets"
    quantiles = sample_quantiles(torch.from_numpy(np.stack(paths, axis=1))).permute(1, 0, 2).numpy()
    ref = _reference(forecasts, test_data, (0.1, 0.9))
    ours = band_coverages(label, quantiles, QUANTILE_LEVELS)
    assert set(ours) == {"coverage_80"}, "the deciles hold no 0.25/0.75: no 50% band"
    assert ours["coverage_80"] == pytest.approx(ref[0.9] - ref[0.1], abs=1e-12)
    assert 0.3 < ours["coverage_80"] < 1.0, "precondition: a band neither empty nor full"
    assert level_coverage(label, quantiles[:, QUANTILE_LEVELS.index(0.9)]) == pytest.approx(ref[0.9], abs=1e-12)


def test_the_50_percent_band_where_its_levels_exist():
    rng = np.random.default_rng(4)
    values, start, test_data = _test_windows(rng, windows=4)
    levels = (0.1, 0.25, 0.5, 0.75, 0.9)
    forecasts, labels, quantiles = [], [], []
    for entry in test_data.input:
        c, f = int(entry["item_id"]), len(entry["target"])
        truth = values[f : f + 24, c]
        centre = np.nan_to_num(truth, nan=10.0) + rng.normal()
        q = np.stack([centre + 2.0 * z for z in (-1.28, -0.67, 0.0, 0.67, 1.28)])
        forecasts.append(QuantileForecast(q, start_date=start + f, forecast_keys=[str(x) for x in levels], item_id=str(c)))
        labels.append(truth)
        quantiles.append(q)
    ref = _reference(forecasts, test_data, levels)
    ours = band_coverages(np.stack(labels), np.stack(quantiles), levels)
    assert ours["coverage_80"] == pytest.approx(ref[0.9] - ref[0.1], abs=1e-12)
    assert ours["coverage_50"] == pytest.approx(ref[0.75] - ref[0.25], abs=1e-12)
    assert (nominal("coverage_80"), nominal("coverage_50")) == (0.8, 0.5)


def test_no_observed_target_gives_nan():
    label = np.full((2, 3), np.nan)
    assert math.isnan(band_coverages(label, np.zeros((2, len(QUANTILE_LEVELS), 3)), QUANTILE_LEVELS)["coverage_80"])
