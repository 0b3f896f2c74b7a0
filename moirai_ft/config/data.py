"""conf/data's schema: what a data option may say about its file (format, timestamps, columns, cleaning),
the column roles and the splits. Each conf/data option lists `/schema/data@_here_` first in its defaults,
and predict.py's `data` node is the same schema (moirai_ft/config/predict.py)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional


class Mode(str, Enum):
    S = "S"  # each column its own series
    M = "M"  # all columns of a window in one sample (uni2ts's wide_multivariate)


class DataFormat(str, Enum):
    wide = "wide"  # a timestamp column and one column per series
    long = "long"  # one row per (item, timestamp, value)


class Duplicates(str, Enum):
    refuse = "refuse"  # stop and report the duplicated timestamps
    first = "first"  # keep the first non-missing value per timestamp and column
    last = "last"
    mean = "mean"


class NonNumeric(str, Enum):
    refuse = "refuse"  # a selected column holding text is an error
    missing = "missing"  # cells that are not numbers become missing values


class TimestampUnit(str, Enum):
    """data.timestamp_unit: the unit of a column of Unix epoch times."""

    s = "s"
    ms = "ms"
    us = "us"
    ns = "ns"


@dataclass
class DataSchema:
    name: str = "synthetic"  # "synthetic" and "building" generate the embedded data; any other name reads `path`
    path: Optional[str] = None  # CSV or Parquet
    num_columns: Optional[int] = None
    num_days: Optional[int] = None
    format: DataFormat = DataFormat.wide
    timestamp_column: Optional[str] = None  # null: the first column
    timestamp_format: Optional[str] = None  # strftime format; null: inferred
    timestamp_unit: Optional[TimestampUnit] = None  # Unix epoch numbers: s|ms|us|ns; null: inferred
    sep: Optional[str] = None  # CSV field separator; null: inferred (, ; tab |)
    decimal: Optional[str] = None  # CSV decimal mark; null: inferred (. or ,)
    item_column: str = "item_id"  # long format only
    value_column: str = "value"  # long format only
    columns: Optional[tuple[str, ...]] = None  # names or globs (sensor_*); null: every column
    exclude: tuple[str, ...] = ()  # names or globs left out
    non_numeric: NonNumeric = NonNumeric.refuse
    freq: Optional[str] = None  # pandas frequency (15min, 1D); null: inferred
    fix_duplicates: Duplicates = Duplicates.refuse
    reindex: bool = False  # put rows on the regular grid; missing steps become missing values
    max_missing: float = 0.5  # columns missing more than this fraction are reported
    drop_bad_columns: bool = False  # drop all-missing, mostly-missing and constant columns
    mode: Mode = Mode.S
    # column roles (moirai_ft/data/roles.py), names or globs; none given: every column a target, as before
    targets: tuple[str, ...] = ()  # forecast and scored
    known_covariates: tuple[str, ...] = ()  # also given over the forecast horizon (weather forecast, schedule)
    past_covariates: tuple[str, ...] = ()  # given up to the forecast start only (setpoints, other sensors)
    train_ratio: float = 0.7
    val_ratio: float = 0.1
    val_start: Optional[str] = None  # a date: overrides train_ratio
    test_start: Optional[str] = None  # a date: overrides val_ratio
    window_stride: int = 1
    eval_stride: int = 96
