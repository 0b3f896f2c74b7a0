"""From new data to what a job's model is asked: the job's columns on the job's time grid, the forecast
start, the context before it and the known covariates over the horizon, in original units.

The data is read with the job's own data options (moirai_ft/data/loading.py), overridden where the user
says so. The forecast starts one step after the last timestamp at which any target has a value
(`backtest=<date>`: at that date). Known covariates over the horizon come from the rows after that (a
weather forecast, a schedule written into the same file) or from a future file, which wins where both
give a value; past covariates and targets need only their history. Every refusal is one line, before
any model loads; torch-free.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf, open_dict
from pandas.tseries.frequencies import to_offset

from moirai_ft.config.data import DataFormat
from moirai_ft.data.loading import EMBEDDED, Table, load_table, long_to_wide, numeric, split_timestamps, table_from_raw
from moirai_ft.data.reading import read_file, timestamps_from_index
from moirai_ft.data.roles import KNOWN, PAST, role_patterns
from moirai_ft.errors import UserError, preview
from moirai_ft.forecast.job import ForecastJob

ROLE_NAMES = {"target": "target", KNOWN: "known covariate", PAST: "past covariate"}


@dataclass
class ForecastInput:
    """One forecast origin for every target of the job. `values` (time, job column) in original units
    covers the context and the horizon, rows before the data's start NaN (unobserved: uni2ts's padding);
    targets and past covariates are NaN over the horizon, known covariates given there."""

    columns: list[str]
    values: np.ndarray  # (context_length + prediction_length, columns)
    context_time: pd.DatetimeIndex  # the context rows the data has (the last context_length at most)
    horizon_time: pd.DatetimeIndex
    truth: np.ndarray  # (prediction_length, targets): the data's target values over the horizon (NaN: none)
    history: np.ndarray  # (rows before the start, targets): the targets' whole past, for MASE's seasonal error
    freq: str
    pad: int = 0  # context steps before the data's start
    notes: list[str] = field(default_factory=list)

    @property
    def has_truth(self) -> bool:
        return bool(np.isfinite(self.truth).any())


def data_config(job: ForecastJob, overrides: dict[str, object] | None = None) -> DictConfig:
    """The job's data options with the user's on top. A file given for a job trained on the embedded data is
    read as data=csv reads it. The frequency is inferred from the new data (then compared with the job's),
    unless data.freq is given here."""
    data = OmegaConf.create(OmegaConf.to_container(job.config.data, resolve=True))
    overrides = dict(overrides or {})
    with open_dict(data):
        if overrides.get("path") and data.get("name") in EMBEDDED:
            data.name = "csv"
        data.freq = None
        for key, value in overrides.items():
            if key not in data:
                raise UserError(f"unknown data option data.{key}; use one of {', '.join(sorted(data))}")
            data[key] = value
    return data


def column_selector(job: ForecastJob, data_cfg: DictConfig):
    """The job's columns, in the job's order: one missing, or a new one the job's column options would have
    taken (data.columns, data.exclude, role globs), is refused."""
    include, exclude = data_cfg.get("columns"), list(data_cfg.get("exclude") or [])
    # explicit targets: columns in no role were left out of the job, and are left out here
    patterns = role_patterns(data_cfg)
    roles_only = bool(patterns["target"])
    role_globs = [p for pats in patterns.values() for p in pats]

    def taken(name: str) -> bool:
        match = lambda pats: any(fnmatch.fnmatchcase(name, str(p)) for p in pats)  # noqa: E731
        return ((include is None or match(include)) and not match(exclude)
                and (not roles_only or match(role_globs)))

    def select(names: list[str]) -> list[str]:
        missing = [c for c in job.columns if c not in names]
        if missing:
            role = ROLE_NAMES[dict(zip(job.columns, job.roles))[missing[0]]]
            raise UserError(
                f"column {missing[0]!r} ({role}) is not in the data"
                + (f", nor {len(missing) - 1} more the job used ({preview(missing[1:], 5, ',')})" if len(missing) > 1 else "")
                + "; the model forecasts from every column the job was trained on: add it"
            )
        new = [c for c in names if c not in job.columns and taken(c)]
        if new and not data_cfg.get("drop_bad_columns"):
            raise UserError(
                f"column {new[0]!r} is new: the job was not trained on it"
                + (f" (nor on {len(new) - 1} more)" if len(new) > 1 else "")
                + f"; leave it out with data.exclude=[{preview(new, 5, ',')}]"
            )
        return list(job.columns)

    return select


def as_raw(frame: pd.DataFrame, data_cfg: DictConfig) -> pd.DataFrame:
    """A user's DataFrame as read_file would return it: timestamps in an index become a column."""
    if not isinstance(frame, pd.DataFrame):
        raise UserError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    if len(frame) == 0:
        raise UserError("the DataFrame has no rows")
    notes: list[str] = []
    raw = timestamps_from_index(frame, notes)
    if isinstance(frame.index, pd.DatetimeIndex) and data_cfg.get("timestamp_column"):
        raw = raw.rename(columns={raw.columns[0]: data_cfg.timestamp_column})
    raw.columns = [str(c).strip() for c in raw.columns]
    return raw


def read_table(job: ForecastJob, data_cfg: DictConfig, frame: pd.DataFrame | None) -> Table:
    """The data on its grid with the job's columns: `frame`, else the file (or embedded data) data_cfg names."""
    select = column_selector(job, data_cfg)
    if frame is not None:
        table = table_from_raw(as_raw(frame, data_cfg), data_cfg, [], select)
    else:
        table = load_table(data_cfg, int(job.config.seed), select)
    if not _same_step(table.freq, job.freq):
        raise UserError(
            f"the data's time step is {table.freq}, the job's is {job.freq}; resample the data to {job.freq} "
            "(the model forecasts steps of the job's frequency), or set data.freq if the step was misread"
        )
    return table


def _same_step(a: str, b: str) -> bool:
    try:
        return to_offset(a) == to_offset(b) or pd.Timedelta(to_offset(a)) == pd.Timedelta(to_offset(b))
    except ValueError:  # calendar steps (months) have no fixed length
        return False


def read_future(job: ForecastJob, data_cfg: DictConfig, future: pd.DataFrame | str | Path) -> pd.DataFrame:
    """The known covariates of a future file (or DataFrame), indexed by timestamp; other columns ignored."""
    notes: list[str] = []
    where = "the future DataFrame"
    if isinstance(future, (str, Path)):
        where = f"future.path={future}"
        with open_dict(cfg := OmegaConf.create(OmegaConf.to_container(data_cfg))):
            cfg.path = str(future)
        try:
            raw = read_file(cfg, notes)
        except UserError as e:
            raise UserError(str(e).replace("data.path", "future.path")) from None
    else:
        raw = as_raw(future, data_cfg)
    if data_cfg.format == DataFormat.long:
        wide = long_to_wide(raw, data_cfg, notes, {})
    else:
        stamps, rest = split_timestamps(raw, data_cfg, notes)
        wide = rest.set_axis(stamps, axis=0)
    missing = [c for c in job.known if c not in wide.columns]
    if missing:
        raise UserError(f"{where} has no column {missing[0]!r}; it must give every known covariate "
                        f"({preview(job.known, 5, ',')}) over the forecast horizon")
    wide = numeric(wide[job.known], data_cfg.non_numeric, notes)
    return wide[~wide.index.duplicated(keep="last")]


def forecast_input(
    job: ForecastJob, table: Table, future: pd.DataFrame | None = None, backtest: str | None = None
) -> ForecastInput:
    """The context and horizon of the forecast from the end of the targets (or from `backtest`)."""
    ctx, pred, patch = int(job.config.context_length), int(job.config.prediction_length), int(job.config.patch_size)
    targets = [table.columns.index(c) for c in job.targets]
    has_target = ~np.isnan(table.values[:, targets]).all(axis=1)
    if not has_target.any():
        raise UserError(f"no target ({preview(job.targets, 5, ',')}) has a value in the data; nothing to forecast from")
    end = int(np.flatnonzero(has_target)[-1]) + 1  # one step after the targets' last value
    notes: list[str] = []
    start = end if backtest is None else _backtest_row(table, str(backtest), end, notes)
    if start < patch:
        raise UserError(
            f"the data has {start} rows before the forecast start ({_step_after(table, start)}); a forecast needs "
            f"at least one patch of context (patch_size={patch} rows; the job's context_length is {ctx})"
        )
    if start < ctx:
        notes.append(f"context padded: the data has {start} rows before the forecast start and the job's "
                     f"context_length is {ctx}; the {ctx - start} steps before the data's start are unobserved, "
                     "as uni2ts pads a short series")
    horizon_time = pd.date_range(table.index[start - 1], periods=pred + 1, freq=table.freq)[1:]
    rows = np.arange(start - ctx, start + pred)
    inside = (rows >= 0) & (rows < len(table.index))
    values = np.full((len(rows), len(table.columns)), np.nan, dtype=np.float32)
    values[inside] = table.values[rows[inside]]
    truth = values[ctx:, targets].copy()
    known = [table.columns.index(c) for c in job.known]
    keep = np.zeros(len(table.columns), dtype=bool)
    keep[known] = True
    values[ctx:, ~keep] = np.nan  # targets and past covariates are not known ahead
    if future is not None and known:
        given = future.reindex(horizon_time).to_numpy(np.float32)
        values[ctx:, known] = np.where(np.isnan(given), values[ctx:, known], given)
    _check_known(values[ctx:], known, table.columns, horizon_time, future is not None)
    return ForecastInput(
        columns=list(table.columns),
        values=values,
        context_time=table.index[max(start - ctx, 0): start],
        horizon_time=horizon_time,
        truth=truth,
        history=table.values[:start, targets],
        freq=table.freq,
        pad=max(ctx - start, 0),
        notes=notes,
    )


def prepare_input(
    job: ForecastJob, data: dict[str, object] | None = None, df: pd.DataFrame | None = None,
    future: pd.DataFrame | str | Path | None = None, backtest: str | None = None,
) -> ForecastInput:
    """What the job's model is asked, checked: `df` (else the data the job's options, with `data` on top,
    name), known covariates from its rows after the targets or from `future`."""
    data_cfg = data_config(job, data)
    table = read_table(job, data_cfg, df)
    ahead = read_future(job, data_cfg, future) if future is not None and job.known else None
    inp = forecast_input(job, table, ahead, backtest)
    if future is not None and not job.known:
        inp.notes.append("the future data was not used: the job has no known covariates")
    return inp


def _step_after(table: Table, row: int) -> str:
    return str(table.index[row]) if row < len(table.index) else f"after {table.index[-1]}"


def _backtest_row(table: Table, date: str, end: int, notes: list[str]) -> int:
    try:
        stamp = pd.Timestamp(date)
    except ValueError:
        raise UserError(f"backtest={date!r} is not a date; use e.g. backtest={table.index[end // 2]:%Y-%m-%d}") from None
    start = int(table.index.searchsorted(stamp))
    if not 0 < start < end:
        raise UserError(
            f"backtest={date} is outside the data's targets ({table.index[0]} to {table.index[end - 1]}); "
            "give a date inside that range (without backtest= the forecast starts after its end)"
        )
    if table.index[start] != stamp:
        notes.append(f"backtest from {table.index[start]}, the first step at or after {date}")
    return start


def _check_known(horizon: np.ndarray, known: list[int], columns: list[str], time: pd.DatetimeIndex, had_future: bool) -> None:
    for j in known:
        missing = np.isnan(horizon[:, j])
        if missing.any():
            source = "the future file" if had_future else "the rows after the targets' last value"
            raise UserError(
                f"known covariate {columns[j]!r} has no value at {int(missing.sum())} of the {len(time)} forecast "
                f"steps (first at {time[np.flatnonzero(missing)[0]]}) in {source}; give its values over the "
                "horizon there, or in a file with future.path=<file>"
            )
