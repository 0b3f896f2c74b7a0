"""From a config to three splits of windows: load the table (moirai_ft/data/loading.py), split it in time,
check it against the model (moirai_ft/data/preflight.py), z-score with train statistics, and index the windows
of each split.

Splits follow the long-sequence-forecasting convention: a validation or test window may take its
context from before its split's start, but no target of a later split is ever a target of an earlier one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from omegaconf import DictConfig
from torch import Tensor

from moirai_ft.config.data import Mode
from moirai_ft.errors import UserError
from moirai_ft.data.loading import Table, load_table
from moirai_ft.data.covariate_windows import CovariateWindows
from moirai_ft.data.preflight import (
    check_covariates_fit,
    check_known_horizons,
    check_model_fits,
    check_windows,
    column_problems,
)
from moirai_ft.data.roles import TARGET, Roles, resolve_roles
from moirai_ft.data.windows import Windows, WindowSpec, forecast_starts

__all__ = ["PreparedData", "prepare", "split_rows", "window_starts"]

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    table: Table
    normalized: np.ndarray  # (time, columns) float32, z-scored with train statistics
    mean: np.ndarray  # (columns,)
    std: np.ndarray  # (columns,)
    val_start: int  # first row of the validation split
    test_start: int  # first row of the test split
    spec: WindowSpec
    train: Windows | CovariateWindows
    val: Windows | CovariateWindows
    test: Windows | CovariateWindows
    roles: Roles | None = None  # None: no data.targets/known_covariates/past_covariates, every column a target

    def role_of(self, column: str) -> str:
        return self.roles.role_of(column) if self.roles is not None else TARGET

    def save_normalization(self, path: Path) -> None:
        """Per-column train statistics, so forecasts can be mapped back to original units."""
        stats = {
            "columns": self.table.columns,
            "role": [self.role_of(c) for c in self.table.columns],
            "mean": [float(m) for m in self.mean],
            "std": [float(s) for s in self.std],
            "freq": self.table.freq,
            "rows": len(self.table.index),
            "start": str(self.table.index[0]),
            "val_start": str(self.table.index[self.val_start]),
            "test_start": str(self.table.index[self.test_start]),
            "notes": self.table.notes,
            "non_finite": self.table.non_finite,  # per column: inf/-inf cells read as missing
        }
        path.write_text(json.dumps(stats, indent=2))


def _row_of(index: pd.DatetimeIndex, date: str, option: str) -> int:
    """The first row at or after `date`."""
    try:
        stamp = pd.Timestamp(str(date))
    except ValueError:
        raise UserError(f"{option}={date!r} is not a date; use e.g. {index[len(index) // 2]:%Y-%m-%d}") from None
    return int(index.searchsorted(stamp))


def split_rows(index: pd.DatetimeIndex, data_cfg: DictConfig) -> tuple[int, int]:
    """(val_start, test_start) rows: from data.val_start/test_start dates where given, else the ratios."""
    n = len(index)
    ratio_rows = int(n * data_cfg.train_ratio), int(n * (data_cfg.train_ratio + data_cfg.val_ratio))
    val_start = _row_of(index, data_cfg.val_start, "data.val_start") if data_cfg.val_start else ratio_rows[0]
    test_start = _row_of(index, data_cfg.test_start, "data.test_start") if data_cfg.test_start else ratio_rows[1]
    if not 0 < val_start < test_start < n:
        raise UserError(
            f"the splits must follow each other inside the data ({index[0]} to {index[-1]}), but the validation "
            f"split starts at row {val_start} and the test split at row {test_start} of {n}; "
            "set data.val_start < data.test_start inside that range (or data.train_ratio/val_ratio)"
        )
    return val_start, test_start


def window_starts(
    n: int, val_start: int, test_start: int, spec: WindowSpec, data_cfg: DictConfig
) -> dict[str, Int[Tensor, "n_starts"]]:
    """Forecast starts of each split: every horizon lies inside its split; contexts may reach back."""
    ctx, pred = spec.context_length, spec.prediction_length
    return {
        "train": forecast_starts(ctx, val_start - pred, data_cfg.window_stride),
        "val": forecast_starts(max(val_start, ctx), test_start - pred, data_cfg.eval_stride),
        "test": forecast_starts(max(test_start, ctx), n - pred, data_cfg.eval_stride),
    }


def normalize(
    values: Float[np.ndarray, "time columns"], train_rows: int
) -> tuple[Float[np.ndarray, "time columns"], Float[np.ndarray, "columns"], Float[np.ndarray, "columns"]]:
    """(z-scored values, mean, std) with statistics of the train rows only, ignoring missing values.
    A constant column keeps std 1, so it is centred but not blown up."""
    with np.errstate(all="ignore"):
        train = values[:train_rows]
        mean = np.nanmean(train, axis=0)
        std = np.nanstd(train, axis=0, ddof=1)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0).astype(np.float32)
    mean = np.where(np.isfinite(mean), mean, 0.0).astype(np.float32)
    return ((values - mean) / std).astype(np.float32), mean, std


def prepare(cfg: DictConfig) -> PreparedData:
    """Everything the job needs from the data, checked before any model is loaded."""
    table = load_table(cfg.data, cfg.seed)
    n = len(table.index)
    val_start, test_start = split_rows(table.index, cfg.data)
    roles = resolve_roles(table.columns, cfg.data)
    if roles is not None and len(roles.columns) < len(table.columns):
        unused = [c for c in table.columns if c not in set(roles.columns)]
        log.info("data: %d columns in no role (data.targets/known_covariates/past_covariates) left out", len(unused))
        table = _select(table, list(roles.columns))
    drop, notes = column_problems(table.values, table.columns, val_start, cfg.data)
    if drop:
        table = _select(table, [c for c in table.columns if c not in set(drop)])
    for note in notes:
        log.warning("data: %s", note)
    table.notes.extend(notes)

    mode = Mode(cfg.data.mode)
    spec = WindowSpec(cfg.context_length, cfg.prediction_length, cfg.patch_size, max(cfg.model.patch_sizes))
    starts = window_starts(n, val_start, test_start, spec, cfg.data)
    if roles is None:
        check_model_fits(spec, 1 if mode == Mode.S else len(table.columns), cfg.model)
    else:
        roles = roles.keep(table.columns)
        per_sample = 1 if mode == Mode.S else len(roles.targets)
        check_covariates_fit(spec, per_sample, len(roles.known), len(roles.past), cfg.model)
    check_windows(starts, spec, n, val_start, test_start)
    if roles is not None:
        known = [table.columns.index(c) for c in roles.known]
        check_known_horizons(table.values, known, table.columns, starts["test"], spec, table.index)

    normalized, mean, std = normalize(table.values, val_start)
    series = torch.from_numpy(np.ascontiguousarray(normalized.T))

    def windows(split: str) -> Windows | CovariateWindows:
        if roles is None:
            return Windows(series, starts[split], spec, mode.value)
        rows = [torch.tensor([table.columns.index(c) for c in names], dtype=torch.long)
                for names in (roles.targets, roles.known, roles.past)]
        return CovariateWindows(series, starts[split], spec, mode.value, *rows)

    return PreparedData(
        table=table,
        normalized=normalized,
        mean=mean,
        std=std,
        val_start=val_start,
        test_start=test_start,
        spec=spec,
        train=windows("train"),
        val=windows("val"),
        test=windows("test"),
        roles=roles,
    )


def _select(table: Table, columns: list[str]) -> Table:
    """The table with only `columns`, in table order."""
    keep = [i for i, c in enumerate(table.columns) if c in set(columns)]
    kept = [table.columns[i] for i in keep]
    non_finite = {c: n for c, n in table.non_finite.items() if c in set(kept)}
    return replace(table, values=table.values[:, keep], columns=kept, non_finite=non_finite)
