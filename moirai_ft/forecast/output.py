"""What predict.py writes: forecasts.csv (or .parquet), forecast.png (recent context, median and 80% band
per target) and prediction.json (which job, which model, from when, notes, backtest metrics). Each file is
written whole or not at all, and only after the forecast succeeded."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from moirai_ft.artifacts import atomic_write, write_json_atomic
from moirai_ft.evaluation.plot import Panel, plot_forecasts
from moirai_ft.forecast.forecaster import Forecast

FORECASTS = "forecasts"  # forecasts.csv | forecasts.parquet
FORECAST_PNG = "forecast.png"
PREDICTION_JSON = "prediction.json"
PREDICTIONS = "predictions"  # <job>/predictions/<time>/: the default out=
PLOT_CONTEXT = 4  # the plot shows this many horizons of context before the forecast


def default_out(job_dir: Path) -> Path:
    """A new directory under the job's predictions/."""
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out, n = Path(job_dir) / PREDICTIONS / stamp, 1
    while out.exists():
        out, n = Path(job_dir) / PREDICTIONS / f"{stamp}_{n}", n + 1
    return out


def write_forecasts(forecast: Forecast, out: Path, fmt: str) -> Path:
    frame = forecast.frame()
    frame.attrs.clear()  # notes and metrics go to prediction.json; parquet would store them as metadata
    path = Path(out) / f"{FORECASTS}.{fmt}"
    if fmt == "parquet":
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            frame.to_parquet(tmp, index=False)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    else:
        with atomic_write(path, newline="") as f:
            frame.to_csv(f, index=False)
    return path


def panels(forecast: Forecast, limit: int) -> list[Panel]:
    """The first `limit` targets: recent context, the truth where the data has it (a backtest)."""
    inp = forecast.input
    pred = len(inp.horizon_time)
    shown = min(len(inp.context_time), PLOT_CONTEXT * pred)
    ctx = inp.values.shape[0] - pred
    out = []
    for i, name in enumerate(forecast.items[:limit]):
        column = inp.columns.index(name)
        out.append(Panel(
            title=f"{name}, {forecast.label} forecast from {inp.horizon_time[0]}",
            context_time=inp.context_time[len(inp.context_time) - shown:],
            context=inp.values[ctx - shown: ctx, column],
            horizon_time=inp.horizon_time,
            truth=inp.truth[:, i] if inp.has_truth else np.full(pred, np.nan),
            forecasts={forecast.label: forecast.quantiles[i]},
        ))
    return out


def write_all(forecast: Forecast, out: Path, fmt: str, plot_items: int, about: dict[str, Any]) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_forecasts(forecast, out, fmt)]
    if plot_items > 0:
        plot_forecasts(panels(forecast, plot_items), out / FORECAST_PNG)
        written.append(out / FORECAST_PNG)
    write_json_atomic(out / PREDICTION_JSON, {
        **about,
        "model": forecast.label,
        "forecast_start": str(forecast.input.horizon_time[0]),
        "prediction_length": len(forecast.input.horizon_time),
        "items": forecast.items,
        "notes": forecast.notes,
        "backtest_metrics": forecast.metrics,
    })
    written.append(out / PREDICTION_JSON)
    return written
