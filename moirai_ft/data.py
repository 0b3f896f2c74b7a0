"""From a config to three splits of windows: load the table, split it in time, z-score with train
statistics, and index the windows of each split.

Splits follow the long-sequence-forecasting convention: a validation or test window may take its
context from before its split's start, but no target of a later split is ever a target of an earlier one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from moirai_ft.errors import UserError
from moirai_ft.synthetic import building_telemetry
from moirai_ft.windows import Windows, WindowSpec, forecast_starts


@dataclass
class Table:
    """A regular wide table in original units: rows are time steps, columns are series."""

    values: np.ndarray  # (time, columns) float32, NaN where missing
    index: pd.DatetimeIndex
    columns: list[str]
    freq: str


@dataclass
class PreparedData:
    table: Table
    normalized: np.ndarray  # (time, columns) float32, z-scored with train statistics
    mean: np.ndarray  # (columns,)
    std: np.ndarray  # (columns,)
    val_start: int  # first row of the validation split
    test_start: int  # first row of the test split
    spec: WindowSpec
    train: Windows
    val: Windows
    test: Windows

    def save_normalization(self, path: Path) -> None:
        """Per-column train statistics, so forecasts can be mapped back to original units."""
        stats = {
            "columns": self.table.columns,
            "mean": [float(m) for m in self.mean],
            "std": [float(s) for s in self.std],
            "freq": self.table.freq,
            "val_start": str(self.table.index[self.val_start]),
            "test_start": str(self.table.index[self.test_start]),
        }
        path.write_text(json.dumps(stats, indent=2))


def load_table(data_cfg: DictConfig, seed: int) -> Table:
    if data_cfg.name == "synthetic":
        df = building_telemetry(data_cfg.num_columns, data_cfg.num_days, seed=seed)
    else:
        df = read_wide(Path(str(data_cfg.path)))
    freq = pd.infer_freq(df.index) or "unknown"
    return Table(df.to_numpy(np.float32), df.index, [str(c) for c in df.columns], freq)


def read_wide(path: Path) -> pd.DataFrame:
    """A wide CSV or Parquet file: the first column holds timestamps, every other column a series."""
    if not path.is_file():
        raise UserError(f"data.path={path} does not exist; point data.path at your CSV or Parquet file")
    df = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
    df = df.set_index(pd.to_datetime(df.iloc[:, 0])).iloc[:, 1:].sort_index()
    return df.astype(np.float32)


def split_rows(n: int, train_ratio: float, val_ratio: float) -> tuple[int, int]:
    val_start = int(n * train_ratio)
    test_start = int(n * (train_ratio + val_ratio))
    return val_start, test_start


def prepare(cfg: DictConfig) -> PreparedData:
    """Everything the job needs from the data, checked before any training starts."""
    table = load_table(cfg.data, cfg.seed)
    n = len(table.index)
    val_start, test_start = split_rows(n, cfg.data.train_ratio, cfg.data.val_ratio)
    with np.errstate(all="ignore"):
        train = table.values[:val_start]
        mean = np.nanmean(train, axis=0)
        std = np.nanstd(train, axis=0, ddof=1)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0).astype(np.float32)
    mean = np.where(np.isfinite(mean), mean, 0.0).astype(np.float32)
    normalized = ((table.values - mean) / std).astype(np.float32)

    spec = WindowSpec(cfg.context_length, cfg.prediction_length, cfg.patch_size, max(cfg.model.patch_sizes))
    ctx, pred = cfg.context_length, cfg.prediction_length
    series = torch.from_numpy(np.ascontiguousarray(normalized.T))
    starts = {
        "train": forecast_starts(ctx, val_start - pred, cfg.data.window_stride),
        "val": forecast_starts(max(val_start, ctx), test_start - pred, cfg.data.eval_stride),
        "test": forecast_starts(max(test_start, ctx), n - pred, cfg.data.eval_stride),
    }
    for split, s in starts.items():
        if len(s) == 0:
            raise UserError(
                f"the {split} split has no window of context_length={ctx} + prediction_length={pred} "
                f"({n} rows, split at rows {val_start} and {test_start}); use a shorter context_length "
                "or prediction_length, or more data"
            )
    mode = cfg.data.mode
    return PreparedData(
        table=table,
        normalized=normalized,
        mean=mean,
        std=std,
        val_start=val_start,
        test_start=test_start,
        spec=spec,
        train=Windows(series, starts["train"], spec, mode),
        val=Windows(series, starts["val"], spec, mode),
        test=Windows(series, starts["test"], spec, mode),
    )
