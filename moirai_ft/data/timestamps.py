"""Timestamps read from one column of the user's file: text in any layout pandas reads, datetimes, or Unix
epoch numbers (the unit inferred from the range, or data.timestamp_unit). A day-month order the format
leaves open is decided by the calendar; time-zone-aware stamps become naive UTC. What was inferred is added
to `notes`; what cannot be read is refused in one line naming the option that fixes it.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from moirai_ft.data.grid import inferred_step
from moirai_ft.errors import UserError
from moirai_ft.values import plain

# Unix epoch times of 1990-01-01 .. 2100-01-01 in each unit: the ranges do not overlap, so a numeric
# timestamp column inside one of them tells its unit
EPOCH_RANGE_S = (631_152_000, 4_102_444_800)
EPOCH_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


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
    if (steps == steps[0]).all() or inferred_step(pd.DatetimeIndex(values)) is not None:
        return 2
    return 1 if (steps % steps.min() == 0).all() else 0


def _order_formats(text: str) -> tuple[str, str] | None:
    """('%d.%m.%Y %H:%M', '%m.%d.%Y %H:%M') for a sample like '03.04.2024 00:00'; None if not of that shape."""
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
    # a year-first date (ISO 8601: 2024-01-02) has no day-first reading, yet pandas 3.1 swaps its month and
    # day under dayfirst=True (format='mixed'): such rows keep their one reading
    year_first = column.astype(str).str.match(r"\s*\d{4}\D").fillna(False).to_numpy(dtype=bool)
    if year_first.any():
        day_first = day_first.mask(year_first, month_first)
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
