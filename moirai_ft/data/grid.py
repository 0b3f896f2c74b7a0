"""A frame with a DatetimeIndex put on its regular time grid: sorted, one row per timestamp, one per step.

Fixes that would silently change the data (collapsing duplicated timestamps, moving stamps onto the grid,
adding missing steps) are refused with their counts unless data.fix_duplicates / data.reindex asks for them;
what was fixed is added to `notes`.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from pandas.tseries.frequencies import to_offset

from moirai_ft.config.data import Duplicates
from moirai_ft.errors import UserError

MAX_GRID_GROWTH = 10  # reindexing may add missing steps, but not turn a few stray stamps into millions of rows


GroupBy = Union[pd.core.groupby.DataFrameGroupBy, pd.core.groupby.SeriesGroupBy]


def collapse(grouped: GroupBy, how: Duplicates) -> pd.DataFrame | pd.Series:
    """One row per group: first/last non-missing value, or the mean of the non-missing values."""
    how = Duplicates(how)
    return {Duplicates.first: grouped.first, Duplicates.last: grouped.last, Duplicates.mean: grouped.mean}[how]()


def refuse_duplicates(how: Duplicates, what: str) -> None:
    if how == Duplicates.refuse:
        raise UserError(f"{what}; keep one value per timestamp with data.fix_duplicates=first|last|mean")


def inferred_step(index: pd.DatetimeIndex) -> pd.DateOffset | None:
    """The step pandas infers from a regular index (None for an irregular or short one)."""
    if len(index) < 3:
        return None
    try:  # pandas 3.1 warns that infer_freq's string becomes an offset: ask for the offset where it can
        with pd.option_context("future.infer_freq_returns_offset", True):
            inferred = pd.infer_freq(index)
    except pd.errors.OptionError:  # older pandas: a string, without the warning
        inferred = pd.infer_freq(index)
    return None if inferred is None else to_offset(inferred)


def _step(index: pd.DatetimeIndex, freq: str | None) -> pd.DateOffset:
    """data.freq, else pandas's inference, else the most common spacing (an irregular index has none inferred)."""
    if freq:
        try:
            return to_offset(freq)
        except ValueError:
            raise UserError(
                f"data.freq={freq!r} is not a pandas frequency; use e.g. 15min or 1D, or null to infer it"
            ) from None
    if (inferred := inferred_step(index)) is not None:
        return inferred
    gaps, counts = np.unique(np.diff(index.asi8), return_counts=True)
    return to_offset(pd.Timedelta(int(gaps[np.argmax(counts)])))


def _need_steps(frame: pd.DataFrame) -> None:
    if len(frame) < 2:
        raise UserError(f"the data has {len(frame)} distinct time step(s); a forecasting job needs a long series")


def regular_grid(frame: pd.DataFrame, data_cfg: DictConfig, notes: list[str]) -> tuple[pd.DataFrame, str]:
    """Sorted, one row per timestamp and one per step of a regular grid; returns the frame and its frequency."""
    _need_steps(frame)
    # every source in nanoseconds: pandas 3 parses and builds ranges in microseconds, Parquet keeps its
    # writer's unit, and the grid arithmetic here (asi8, Timestamp.value) counts nanoseconds
    frame = frame.set_axis(frame.index.as_unit("ns"), axis=0)
    if not frame.index.is_monotonic_increasing:
        out_of_order = int((np.diff(frame.index.asi8) < 0).sum())
        notes.append(f"rows sorted by time ({out_of_order} were out of order)")
        frame = frame.sort_index(kind="stable")
    dup = frame.index.duplicated()
    if dup.any():
        count, how = int(dup.sum()), Duplicates(data_cfg.fix_duplicates)
        refuse_duplicates(how, f"{count} rows repeat an earlier timestamp (first: {frame.index[dup][0]})")
        notes.append(f"{count} duplicated timestamps collapsed by data.fix_duplicates={how.value}")
        frame = collapse(frame.groupby(level=0, sort=True), how)
        _need_steps(frame)  # every row may have shared one timestamp
    step = _step(frame.index, data_cfg.freq)
    first, last = frame.index[0], frame.index[-1]
    try:  # counted before it is built: data.freq=1s on a year of 15-minute rows would fill the memory
        rows = (last - first) // pd.Timedelta(step) + 1
    except ValueError:  # a calendar step (months): never finer than the data's
        rows = 0
    if rows > MAX_GRID_GROWTH * len(frame):
        raise UserError(
            f"{f'data.freq={data_cfg.freq}' if data_cfg.freq else f'the inferred step {step.freqstr}'} makes a "
            f"grid from {first} to {last} of {rows} rows for {len(frame)} in the file; set data.freq to the "
            "data's real step (or null to infer it), or remove stray timestamps"
        )
    grid = pd.date_range(first, last, freq=step, name=frame.index.name)
    if len(grid) == len(frame) and grid.equals(frame.index):
        return frame, step.freqstr
    on_grid = frame.index.isin(grid)
    absent = ~grid.isin(frame.index)
    off, missing = int((~on_grid).sum()), int(absent.sum())
    gaps = int(np.count_nonzero(np.diff(absent.astype(np.int8)) == 1)) + int(absent[0])
    parts = ([f"{missing} time steps missing in {gaps} gaps"] if missing else []) + (
        [f"{off} timestamps off the grid"] if off else []
    )
    what = f"irregular spacing at {step.freqstr}: " + " and ".join(parts)
    example = frame.index[~on_grid][0] if off else grid[absent][0]
    if not data_cfg.reindex:
        raise UserError(
            f"{what} (first at {example}); set data.reindex=true to put rows on the regular grid "
            "(missing steps become missing values), or data.freq if the step is wrong"
        )
    if off:
        frame = _snap(frame, step, grid[0], data_cfg.fix_duplicates)
    notes.append(f"{what}: reindexed to {len(grid)} rows on the {step.freqstr} grid (data.reindex=true)")
    return frame.reindex(grid), step.freqstr


def _snap(frame: pd.DataFrame, step: pd.DateOffset, anchor: pd.Timestamp, how: Duplicates) -> pd.DataFrame:
    """Timestamps moved to the nearest grid step (a fixed step only: months have no nearest)."""
    try:
        nanos = pd.Timedelta(step).value
    except ValueError:
        raise UserError(
            f"timestamps off the {step.freqstr} grid cannot be moved onto it (a calendar step); fix them in the file"
        ) from None
    offsets = np.rint((frame.index.asi8 - anchor.value) / nanos).astype(np.int64) * nanos
    snapped = frame.set_axis(pd.DatetimeIndex(anchor.value + offsets, name=frame.index.name), axis=0)
    dup = snapped.index.duplicated()
    if dup.any():
        first = snapped.index[dup][0]
        refuse_duplicates(
            how, f"{int(dup.sum())} timestamps land on an occupied step of the {step.freqstr} grid (first: {first})"
        )
        snapped = collapse(snapped.groupby(level=0, sort=True), how)
    return snapped
