"""moirai_ft.evaluation.metrics against gluonts's own evaluation on the same arrays."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from gluonts.dataset.split import split
from gluonts.ev.metrics import MAE, MASE, MSE, RMSE, MeanWeightedSumQuantileLoss
from gluonts.ev.ts_stats import seasonal_error
from gluonts.model.evaluation import evaluate_forecasts
from gluonts.model.forecast import SampleForecast

from moirai_ft.evaluation.metrics import forecast_metrics, rel_improvement, seasonal_errors, seasonality
from moirai_ft.model.family import sample_quantiles
from moirai_ft.scores import QUANTILE_LEVELS

FREQ = "15min"


def _series(rng: np.random.Generator, time: int, columns: int) -> np.ndarray:
    """Daily-periodic series with NaN gaps, in the context, the labels and at the very start."""
    t = np.arange(time)[:, None]
    values = 10 + 5 * np.sin(2 * np.pi * t / 96 + rng.uniform(0, 6, columns)) + rng.standard_normal((time, columns))
    for c in range(columns):
        for _ in range(4):
            s = rng.integers(0, time - 10)
            values[s : s + rng.integers(1, 10), c] = np.nan
    values[:3, 0] = np.nan
    return values


@pytest.mark.parametrize("num_samples", [100, 7, 1])
def test_sample_quantiles_equal_gluonts_sample_forecast(num_samples: int):
    rng = np.random.default_rng(0)
    samples = rng.standard_normal((num_samples, 12)).astype(np.float32)
    ours = sample_quantiles(torch.from_numpy(samples)).numpy()
    forecast = SampleForecast(samples=samples, start_date=pd.Period("2024-01-01", freq=FREQ))
    for i, q in enumerate(QUANTILE_LEVELS):
        np.testing.assert_array_equal(ours[i], forecast.quantile(q))


def test_seasonal_errors_equal_gluonts_on_the_whole_past():
    rng = np.random.default_rng(1)
    values = _series(rng, 700, 3)
    m = 96
    # starts before m fall back to period 1 (gluonts's rule); 96 and 97 are the boundary
    columns = np.array([0, 1, 2, 0, 1, 2, 0])
    starts = np.array([650, 97, 96, 50, 2, 300, 400])
    ours = seasonal_errors(values, columns, starts, m)
    for c, f, value in zip(columns, starts, ours):
        reference = seasonal_error(np.ma.masked_invalid(values[:f, c]), seasonality=m, time_axis=-1)
        # a past of exactly m steps has no pair: NaN in both
        assert value == pytest.approx(float(np.ma.filled(reference, np.nan)[0]), rel=1e-12, nan_ok=True), (c, f)


def test_seasonality_from_frequency():
    assert seasonality("15min") == 96  # one day of 15-minute steps
    assert seasonality("h") == 24
    assert seasonality("unknown") == 1


def test_forecast_metrics_equal_gluonts_evaluate_forecasts():
    """Rolling test windows over NaN-holed series, scored by gluonts's evaluate_forecasts (what uni2ts's
    evaluation runs) and by ours from the same sampled paths."""
    rng = np.random.default_rng(2)
    time, columns, test_start, pred, stride, windows, num_samples = 900, 3, 700, 24, 24, 8, 50
    values = _series(rng, time, columns)
    start = pd.Period("2024-01-01 00:00", freq=FREQ)
    dataset = [{"start": start, "target": values[:, c], "item_id": str(c)} for c in range(columns)]
    _, template = split(dataset, offset=test_start)
    test_data = template.generate_instances(prediction_length=pred, windows=windows, distance=stride)

    forecasts, items, paths = [], [], []
    for entry in test_data.input:
        c, f = int(entry["item_id"]), len(entry["target"])
        samples = values[f : f + pred, c] + 3 * rng.standard_normal((num_samples, pred)) + rng.normal()
        samples = np.nan_to_num(samples, nan=10.0).astype(np.float32)  # forecasts are never NaN
        forecasts.append(SampleForecast(samples=samples, start_date=start + f, item_id=str(c)))
        items.append((c, f))
        paths.append(samples)
    reference = evaluate_forecasts(
        forecasts,
        test_data=test_data,
        metrics=[
            MAE(forecast_type="0.5"),
            MSE(forecast_type="0.5"),
            RMSE(forecast_type="0.5"),
            MASE(forecast_type="0.5"),
            MeanWeightedSumQuantileLoss(quantile_levels=QUANTILE_LEVELS),
        ],
        axis=None,
    ).iloc[0]

    cols = np.array([c for c, _ in items])
    starts = np.array([f for _, f in items])
    label = values[starts[:, None] + np.arange(pred), cols[:, None]]
    assert np.isnan(label).any(), "the fixture must hold missing targets"
    quantiles = sample_quantiles(torch.from_numpy(np.stack(paths, axis=1))).permute(1, 0, 2).numpy()
    ours = forecast_metrics(label, quantiles, seasonal_errors(values, cols, starts, seasonality(FREQ)))

    assert ours["mae"] == pytest.approx(reference["MAE[0.5]"], rel=1e-9)
    assert ours["mse"] == pytest.approx(reference["MSE[0.5]"], rel=1e-9)
    assert ours["rmse"] == pytest.approx(reference["RMSE[0.5]"], rel=1e-9)
    assert ours["mase"] == pytest.approx(reference["MASE[0.5]"], rel=1e-9)
    assert ours["wql"] == pytest.approx(reference["mean_weighted_sum_quantile_loss"], rel=1e-9)


def test_missing_targets_are_left_out_and_nan_forecasts_show():
    label = np.array([[1.0, np.nan, 3.0]])
    quantiles = np.full((1, len(QUANTILE_LEVELS), 3), 2.0)
    quantiles[0, :, 1] = 1e6  # a wild forecast where the target is missing must not count
    out = forecast_metrics(label, quantiles, seasonal_error=np.array([0.5]))
    assert out["mae"] == pytest.approx(1.0)
    assert out["mse"] == pytest.approx(1.0)
    assert out["mase"] == pytest.approx(2.0)
    quantiles[0, :, 0] = np.nan
    assert math.isnan(forecast_metrics(label, quantiles)["mae"])


def test_rel_improvement_is_positive_when_fine_tuning_helps():
    rel = rel_improvement(
        {"mae": 0.8, "val_nll": -1.2, "mse": 1.0, "wql": 1.0},
        {"mae": 1.0, "val_nll": -1.0, "mse": 0.0, "wql": float("nan")},
    )
    assert rel["mae"] == pytest.approx(0.2)
    assert rel["val_nll"] == pytest.approx(0.2)  # lower NLL is better, even below zero
    assert math.isnan(rel["mse"]) and math.isnan(rel["wql"])  # undefined, not a number that misleads
