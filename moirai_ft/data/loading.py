"""Reading the user's file into a regular wide table: columns selected and numeric, timestamps parsed
(timestamps.py), one row per step of a regular time grid (grid.py); a long file (item, timestamp, value)
pivoted to one column per item.

Problems a fix would silently change the data for (duplicated timestamps, irregular spacing, text in a
numeric column) are refused with their counts unless the option that fixes them is set; what was fixed
is kept in `Table.notes` and logged.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from moirai_ft.config.data import DataFormat, Duplicates, NonNumeric
from moirai_ft.data.grid import collapse, refuse_duplicates, regular_grid
from moirai_ft.data.reading import read_file
from moirai_ft.data.synthetic import building_plant, building_telemetry
from moirai_ft.data.timestamps import parse_timestamps
from moirai_ft.errors import UserError, preview

log = logging.getLogger(__name__)


@dataclass
class Table:
    """A regular wide table in original units: rows are time steps, columns are series."""

    values: np.ndarray  # (time, columns) float32, NaN where missing
    index: pd.DatetimeIndex
    columns: list[str]
    freq: str
    notes: list[str] = field(default_factory=list)  # what loading reported or fixed
    non_finite: dict[str, int] = field(default_factory=dict)  # per column: inf/-inf cells read as missing


EMBEDDED = ("synthetic", "building")  # data.name values generated in moirai_ft/data/synthetic.py, no file read
Select = Callable[[list[str]], list[str]]  # the series' names -> the columns to keep, in table order


def load_table(data_cfg: DictConfig, seed: int, select: Select | None = None) -> Table:
    """The selected columns of the configured data on a regular grid. `select` picks the columns from the
    series' names (default: data.columns minus data.exclude)."""
    notes: list[str] = []
    if data_cfg.name in EMBEDDED:
        if data_cfg.name == "building":
            frame = building_plant(data_cfg.num_days, seed=seed, num_sensors=data_cfg.num_columns or 0)
        else:
            frame = building_telemetry(data_cfg.num_columns, data_cfg.num_days, seed=seed)
        frame = frame[_selector(data_cfg, select)(list(frame.columns))]
        return grid_table(frame, data_cfg, notes, {})
    return table_from_raw(read_file(data_cfg, notes), data_cfg, notes, select)


def _selector(data_cfg: DictConfig, select: Select | None) -> Select:
    return select or (lambda names: select_columns(names, data_cfg.columns, data_cfg.exclude))


def table_from_raw(raw: pd.DataFrame, data_cfg: DictConfig, notes: list[str], select: Select | None = None) -> Table:
    """A frame as read from a file (wide or long, every column kept) as a regular table."""
    select = _selector(data_cfg, select)
    non_finite: dict[str, int] = {}
    if data_cfg.format == DataFormat.long:
        frame = long_to_wide(raw, data_cfg, notes, non_finite)
        frame = frame[select(list(frame.columns))]
    else:
        stamps, rest = split_timestamps(raw, data_cfg, notes)
        rest = rest[select(list(rest.columns))]
        frame = numeric(rest, data_cfg.non_numeric, notes).set_axis(stamps, axis=0)
        frame = non_finite_as_missing(frame, non_finite)
    return grid_table(frame, data_cfg, notes, non_finite)


def grid_table(frame: pd.DataFrame, data_cfg: DictConfig, notes: list[str], non_finite: dict[str, int]) -> Table:
    """The numeric frame (DatetimeIndex) on its regular grid, with what loading noted."""
    non_finite = {str(c): non_finite[str(c)] for c in frame.columns if non_finite.get(str(c))}
    if non_finite:
        notes.append(f"{sum(non_finite.values())} non-finite values (inf, -inf) read as missing: "
                     + ", ".join(f"{c!r} {n}" for c, n in non_finite.items()))
    frame, freq = regular_grid(frame, data_cfg, notes)
    for note in notes:
        log.warning("data: %s", note)
    return Table(frame.to_numpy(np.float32), frame.index, [str(c) for c in frame.columns], freq, notes, non_finite)


def non_finite_as_missing(frame: pd.DataFrame, counts: dict[str, int]) -> pd.DataFrame:
    """inf and -inf cells (also numbers beyond float32's range) as NaN, which the model reads as
    unobserved (observed_mask 0, as uni2ts treats NaN); their count per column is added to `counts`."""
    values = frame.to_numpy(np.float32, copy=True)
    bad = np.isinf(values)
    if not bad.any():
        return frame
    for name, n in zip(frame.columns, bad.sum(axis=0)):
        if n:
            counts[str(name)] = counts.get(str(name), 0) + int(n)
    values[bad] = np.nan
    return pd.DataFrame(values, index=frame.index, columns=frame.columns)


def _column(raw: pd.DataFrame, name: str, option: str) -> pd.Series:
    if name not in raw.columns:
        raise UserError(
            f"no column named {name!r} ({option}); the file's columns are {preview(list(raw.columns))}; "
            f"set {option} to one of them"
        )
    return raw[name]


def split_timestamps(
    raw: pd.DataFrame, data_cfg: DictConfig, notes: list[str]
) -> tuple[pd.DatetimeIndex, pd.DataFrame]:
    """The timestamp column (data.timestamp_column, else the first column) parsed, and the other columns."""
    name = data_cfg.timestamp_column or raw.columns[0]
    stamps = parse_timestamps(_column(raw, name, "data.timestamp_column"), data_cfg, notes)
    rest = raw.drop(columns=[name])
    if rest.shape[1] == 0:
        raise UserError(f"the file has only the timestamp column {name!r}; add one column per series")
    return stamps, rest




def select_columns(available: list[str], include: Sequence[str] | None, exclude: Sequence[str]) -> list[str]:
    """Columns named or matched by a glob in data.columns (all when null), minus data.exclude, in file order."""
    for option, patterns in (("data.columns", include or []), ("data.exclude", exclude or [])):
        for pattern in patterns:
            if not fnmatch.filter(available, str(pattern)):
                raise UserError(
                    f"{option} entry {str(pattern)!r} matches no column; the columns are {preview(available)}"
                )
    def matches(name: str, patterns: Sequence[str]) -> bool:
        return any(fnmatch.fnmatchcase(name, str(p)) for p in patterns)

    keep = [c for c in available if (include is None or matches(c, include)) and not matches(c, exclude or [])]
    if not keep:
        raise UserError("data.columns and data.exclude leave no column; select at least one series")
    return keep


def _float32(values: pd.Series | pd.DataFrame) -> pd.Series | pd.DataFrame:
    """As float32. A magnitude beyond float32's (3.4e38) becomes +-inf, on purpose: non_finite_as_missing
    then counts it and reads it as missing, as it does inf in the file."""
    with np.errstate(over="ignore"):
        return values.astype(np.float32)


def numeric(frame: pd.DataFrame, non_numeric: NonNumeric, notes: list[str], excludable: bool = True) -> pd.DataFrame:
    """Every column as float32; text cells refused, or read as missing with data.non_numeric=missing.
    `excludable`: whether leaving the column out is a fix to offer (not for a long file's value column)."""
    out: dict[str, pd.Series] = {}
    texts: list[tuple[str, int, object]] = []
    for name in frame.columns:
        col = frame[name]
        if pd.api.types.is_numeric_dtype(col):
            out[name] = _float32(col)
            continue
        if pd.api.types.is_datetime64_any_dtype(col):  # dates are not a series to forecast
            values = pd.Series(np.nan, index=col.index)
        else:
            values = pd.to_numeric(col, errors="coerce")
        bad = values.isna() & col.notna()
        if bad.any():
            texts.append((name, int(bad.sum()), col[bad].iloc[0]))
        out[name] = _float32(values)
    if texts and non_numeric == NonNumeric.refuse:
        name, count, example = texts[0]
        names = ",".join(t[0] for t in texts)
        raise UserError(
            f"column {name!r} holds text ({count} of {len(frame)} cells, e.g. {str(example)!r})"
            + (f", and {len(texts) - 1} more columns do" if len(texts) > 1 else "")
            + (f"; leave it out with data.exclude=[{names}] or" if excludable else ";")
            + " read such cells as missing with data.non_numeric=missing"
        )
    for name, count, _ in texts:
        notes.append(f"column {name!r}: {count} text cells read as missing (data.non_numeric=missing)")
    return pd.DataFrame(out, index=frame.index)



def long_to_wide(
    raw: pd.DataFrame, data_cfg: DictConfig, notes: list[str], non_finite: dict[str, int]
) -> pd.DataFrame:
    """A long file (item, timestamp, value per row) as a wide frame with one column per item; non-finite
    values are missing values, counted per item in `non_finite`."""
    items = _column(raw, data_cfg.item_column, "data.item_column").astype(str)
    value_column = _column(raw, data_cfg.value_column, "data.value_column").to_frame()
    values = numeric(value_column, data_cfg.non_numeric, notes, excludable=False)
    stamp_column = _column(raw, data_cfg.timestamp_column or raw.columns[0], "data.timestamp_column")
    stamps = parse_timestamps(stamp_column, data_cfg, notes)
    long = pd.DataFrame({"item": items.to_numpy(), "timestamp": stamps, "value": values.iloc[:, 0].to_numpy()})
    inf = np.isinf(long["value"].to_numpy())
    if inf.any():
        for item, n in long.loc[inf, "item"].value_counts().items():
            non_finite[str(item)] = int(n)
        long.loc[inf, "value"] = np.nan
    dup = long.duplicated(["item", "timestamp"]).to_numpy()
    if dup.any():
        first, count, how = long[dup].iloc[0], int(dup.sum()), Duplicates(data_cfg.fix_duplicates)
        where = f"first: {first['item']!r} at {first['timestamp']}"
        refuse_duplicates(how, f"{count} rows repeat an earlier (item, timestamp) pair ({where})")
        notes.append(f"{count} duplicated (item, timestamp) rows collapsed by data.fix_duplicates={how.value}")
        long = collapse(long.groupby(["timestamp", "item"], sort=False)["value"], how).reset_index()
    wide = long.pivot(index="timestamp", columns="item", values="value")
    wide.columns = [str(c) for c in wide.columns]
    return _float32(wide)

