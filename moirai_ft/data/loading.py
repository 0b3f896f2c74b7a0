"""Reading the user's file into a regular wide table: timestamps parsed and sorted, columns selected and
numeric, one row per step of a regular time grid.

Problems a fix would silently change the data for (duplicated timestamps, irregular spacing, text in a
numeric column) are refused with their counts unless the option that fixes them is set; what was fixed
is kept in `Table.notes` and logged.
"""

from __future__ import annotations

import fnmatch
import logging
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from pandas.tseries.frequencies import to_offset

from moirai_ft.config.data import DataFormat, Duplicates, NonNumeric
from moirai_ft.errors import UserError, preview
from moirai_ft.data.reading import read_file
from moirai_ft.data.synthetic import building_plant, building_telemetry
from moirai_ft.values import plain

log = logging.getLogger(__name__)

# Unix epoch times of 1990-01-01 .. 2100-01-01 in each unit: the ranges do not overlap, so a numeric
# timestamp column inside one of them tells its unit
EPOCH_RANGE_S = (631_152_000, 4_102_444_800)
EPOCH_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
MAX_GRID_GROWTH = 10  # reindexing may add missing steps, but not turn a few stray stamps into millions of rows


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


def epoch_unit(column: pd.Series) -> str | None:
    """The unit (s, ms, us, ns) in which every value of a numeric column is a Unix epoch time between
    1990 and 2100, or None."""
    values = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    for unit, per_second in EPOCH_UNITS.items():
        low, high = (b * per_second for b in EPOCH_RANGE_S)
        if ((values >= low) & (values <= high)).all():
            return unit
    return None


def _numeric_stamps(column: pd.Series, unit: str | None, data_cfg: DictConfig, notes: list[str]) -> pd.Series:
    """A column of numbers as Unix epoch times in data.timestamp_unit, else in the inferred unit."""
    name = column.name
    given = plain(data_cfg.get("timestamp_unit"))
    unit = given or unit
    if unit is None:
        raise UserError(
            f"no timestamp column: column {name!r} holds numbers (e.g. {column.iloc[0]!r}); put the timestamps "
            "in the first column or name their column with data.timestamp_column=<name>; Unix epoch times "
            "outside 1990-2100 need data.timestamp_unit=s|ms|us|ns"
        )
    if not given:
        notes.append(f"timestamps in column {name!r} read as Unix epoch times in {unit} (inferred; "
                     "set data.timestamp_unit=s|ms|us|ns to override)")
    numbers = pd.to_numeric(column, errors="coerce")
    try:
        return pd.to_datetime(numbers, unit=unit, errors="coerce")
    except (ValueError, OverflowError, pd.errors.OutOfBoundsDatetime):
        raise UserError(
            f"column {name!r} holds numbers (e.g. {column.iloc[0]!r}) too large for Unix epoch times in "
            f"{unit}; set data.timestamp_unit to their unit (s|ms|us|ns)"
        ) from None


def parse_timestamps(column: pd.Series, data_cfg: DictConfig, notes: list[str]) -> pd.DatetimeIndex:
    """Timestamps from a column of text, datetimes or Unix epoch numbers. Time-zone-aware stamps become
    naive UTC, with a note: local wall time repeats and skips an hour at DST changes, which would
    break the regular grid."""
    name, fmt = column.name, data_cfg.timestamp_format
    present = column.notna().to_numpy()
    numbers = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)

    def parse(how: str | None, utc: bool = False, dayfirst: bool = False) -> pd.Series:
        with warnings.catch_warnings():  # "could not infer format": we check the result ourselves
            warnings.simplefilter("ignore", UserWarning)
            # pandas 2 returns mixed UTC offsets as objects with this warning (pandas 3 raises): either way
            # the caller sees no datetime dtype and parses again with utc=True
            warnings.filterwarnings("ignore", "In a future version of pandas, parsing datetimes with mixed time zones",
                                    FutureWarning)
            try:
                return pd.to_datetime(column, format=how, errors="coerce", utc=utc, dayfirst=dayfirst)
            except (ValueError, TypeError):  # mixed time zones without utc=True
                try:
                    return pd.to_datetime(column, format=how, errors="coerce", utc=True, dayfirst=dayfirst)
                except (ValueError, TypeError, OverflowError):  # e.g. a format pandas cannot use
                    return pd.Series(pd.NaT, index=column.index, dtype="datetime64[ns]")
            except OverflowError:
                return pd.Series(pd.NaT, index=column.index, dtype="datetime64[ns]")

    def read(dayfirst: bool) -> pd.Series:
        parsed = parse(fmt, dayfirst=dayfirst)
        if fmt is None and (parsed.isna().to_numpy() & present).any():  # rows in another layout than the first
            parsed = parse("mixed", dayfirst=dayfirst)
        if not pd.api.types.is_datetime64_any_dtype(parsed):  # several UTC offsets
            parsed = parse(fmt or "mixed", utc=True, dayfirst=dayfirst)
        return parsed

    if numbers or data_cfg.get("timestamp_unit"):
        parsed = _numeric_stamps(column, epoch_unit(column) if numbers else None, data_cfg, notes)
    else:
        parsed = read(dayfirst=False)
        if fmt is None:  # 03.04.2024: the 3rd of April or March the 4th? The calendar decides
            parsed = day_month_order(column, parsed, read(dayfirst=True), notes)
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad) == len(column):
        raise UserError(
            f"no timestamp column: column {name!r} holds no timestamps (e.g. {column.iloc[0]!r}); put the "
            "timestamps in the first column or name their column with data.timestamp_column=<name>"
        )
    if len(bad):
        first = int(bad[0])
        shown = repr(column.iloc[first]) if present[first] else "an empty cell"
        if numbers or data_cfg.get("timestamp_unit"):
            how = "check data.timestamp_unit (s|ms|us|ns)"
        elif fmt:
            how = f"data.timestamp_format={fmt!r} does not match them"
        else:
            how = "give their format with data.timestamp_format (e.g. '%d.%m.%Y %H:%M')"
        raise UserError(
            f"{len(bad)} of {len(column)} timestamps in column {name!r} could not be read (row {first + 1}: "
            f"{shown}); fix them in the file or {how}"
        )
    if parsed.dt.tz is not None:
        zone = str(parsed.dt.tz)
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
        notes.append(f"timestamps in column {name!r} carry a time zone ({zone}): converted to UTC, "
                     "so daylight-saving changes leave no gap or repeat in the grid")
    return pd.DatetimeIndex(parsed, name="timestamp")


def _grid_tier(stamps: pd.Series) -> int:
    """How well timestamps in file order form a time grid: 2 regular (monotonic, one step, or a calendar
    step pandas infers), 1 monotonic with gaps (every step a multiple of the smallest), 0 neither."""
    values = stamps.dropna().to_numpy(dtype="datetime64[ns]").astype(np.int64)
    steps = np.diff(values)
    if len(steps) == 0:
        return 0
    if (steps < 0).all():  # newest first: the same grid read backwards
        values, steps = values[::-1], -steps[::-1]
    if not (steps > 0).all():
        return 0
    if (steps == steps[0]).all() or (len(values) >= 3 and pd.infer_freq(pd.DatetimeIndex(values)) is not None):
        return 2
    return 1 if (steps % steps.min() == 0).all() else 0


def _order_formats(text: str) -> tuple[str, str] | None:
    """('%d.%m.%Y %H:%M', '%m.%d.%Y %H:%M') for a sample like '03.04.2024 00:00'; None if not of that shape."""
    import re

    match = re.fullmatch(r"\s*\d{1,2}([./-])\d{1,2}\1(\d{2}|\d{4})(?:([ T])\d{1,2}:\d{2}(:\d{2})?)?\s*", text)
    if not match:
        return None
    sep, year, tsep, seconds = match.groups()
    rest = f"{tsep}%H:%M{':%S' if seconds else ''}" if tsep else ""
    y = "%Y" if len(year) == 4 else "%y"
    return f"%d{sep}%m{sep}{y}{rest}", f"%m{sep}%d{sep}{y}{rest}"


def day_month_order(column: pd.Series, month_first: pd.Series, day_first: pd.Series, notes: list[str]) -> pd.Series:
    """Text dates read month-first and day-first: when they differ, the order whose timestamps form a
    regular, increasing grid (a wrong order scrambles the calendar: 13.01 follows 12.01 as Jan 13 after
    Dec 1). Both or neither: refused, naming data.timestamp_format, never a reindex that would keep
    the scrambled calendar."""
    differ = (month_first != day_first) & ~(month_first.isna() & day_first.isna())
    if not differ.any():
        return month_first
    name = column.name
    example = str(column[differ].iloc[0])
    readings = {"day first": day_first, "month first": month_first}
    complete = {k: v for k, v in readings.items() if not v[column.notna()].isna().any()}
    if len(complete) < 2:  # an order some rows cannot be read in is not theirs (13.01 has no month 13)
        return next(iter(complete.values()), month_first)  # none: the unreadable rows are reported next
    tiers = {k: _grid_tier(v) for k, v in complete.items()}
    best = max(tiers.values())
    winners = [k for k, t in tiers.items() if t == best and t > 0]
    if len(winners) == 1:
        notes.append(f"timestamps in column {name!r} read {winners[0]} (e.g. {example!r}): the only order that "
                     "gives an increasing time grid; set data.timestamp_format to override")
        return readings[winners[0]]
    formats = _order_formats(example)
    hint = (f"'{formats[0]}' (day first) or '{formats[1]}' (month first)" if formats
            else "e.g. '%d.%m.%Y %H:%M' (day first) or '%m.%d.%Y %H:%M' (month first)")
    why = "both orders give a regular time grid" if winners else "neither order gives an increasing time grid"
    raise UserError(
        f"timestamps in column {name!r} read as day-month or month-day differ (e.g. {example!r}) and {why}; "
        f"set data.timestamp_format={hint}"
    )


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


GroupBy = Union[pd.core.groupby.DataFrameGroupBy, pd.core.groupby.SeriesGroupBy]


def collapse(grouped: GroupBy, how: Duplicates) -> pd.DataFrame | pd.Series:
    """One row per group: first/last non-missing value, or the mean of the non-missing values."""
    how = Duplicates(how)
    return {Duplicates.first: grouped.first, Duplicates.last: grouped.last, Duplicates.mean: grouped.mean}[how]()


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
        _refuse_duplicates(how, f"{count} rows repeat an earlier (item, timestamp) pair ({where})")
        notes.append(f"{count} duplicated (item, timestamp) rows collapsed by data.fix_duplicates={how.value}")
        long = collapse(long.groupby(["timestamp", "item"], sort=False)["value"], how).reset_index()
    wide = long.pivot(index="timestamp", columns="item", values="value")
    wide.columns = [str(c) for c in wide.columns]
    return _float32(wide)


def _refuse_duplicates(how: Duplicates, what: str) -> None:
    if how == Duplicates.refuse:
        raise UserError(f"{what}; keep one value per timestamp with data.fix_duplicates=first|last|mean")


def _step(index: pd.DatetimeIndex, freq: str | None) -> pd.DateOffset:
    """data.freq, else pandas's inference, else the most common spacing (an irregular index has none inferred)."""
    if freq:
        try:
            return to_offset(freq)
        except ValueError:
            raise UserError(
                f"data.freq={freq!r} is not a pandas frequency; use e.g. 15min or 1D, or null to infer it"
            ) from None
    if len(index) >= 3 and (inferred := pd.infer_freq(index)):
        return to_offset(inferred)
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
        _refuse_duplicates(how, f"{count} rows repeat an earlier timestamp (first: {frame.index[dup][0]})")
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
        _refuse_duplicates(
            how, f"{int(dup.sum())} timestamps land on an occupied step of the {step.freqstr} grid (first: {first})"
        )
        snapped = collapse(snapped.groupby(level=0, sort=True), how)
    return snapped
