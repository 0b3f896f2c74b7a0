"""A fuzzer for the data path: hypothesis writes tables a user might hand over (numbers, text cells, NaN
and inf, gaps, duplicated, unsorted or tz-aware timestamps, Unix epoch numbers, odd column names, tiny
and empty files; CSV with either separator and decimal mark, Parquet with or without a timestamp index)
and runs everything the job does with them before a model exists (moirai_ft/data/prepare.py: load_table,
the splits, the column checks, the window checks, normalisation).

The promise under test: the result is a valid table, or a UserError with a one-line message. Any other
exception is a bug.

In the suite: the "suite" profile, a fixed number of examples drawn from a fixed seed (derandomize).
A longer run (README, Testing):  HYPOTHESIS_PROFILE=long python -m pytest -q tests/data/test_fuzz_loading.py
"""

from __future__ import annotations

import copy
import functools
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf

from conftest import compose_cfg
from moirai_ft.data.prepare import prepare
from moirai_ft.errors import UserError

settings.register_profile("suite", max_examples=60, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "3000")), deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "suite")

# windows small enough that a few dozen rows can pass every check
WINDOWS = ["context_length=8", "prediction_length=4", "patch_size=8", "data.eval_stride=4"]

NAMES = st.one_of(
    st.sampled_from(["sensor", "value", " padded ", "a,b", "a;b", "ü-zone", "", "0", "nan", "item_id", "timestamp"]),
    st.text(min_size=0, max_size=6),
)


def sometimes(p: float = 0.25):
    """True with probability about p. Each spoiling is rarer than a clean table, so most tables pass, and
    False is the simplest draw: hypothesis starts from (and shrinks towards) simple examples, which must
    therefore be clean tables, not every spoiling at once."""
    return st.integers(0, 99).map(lambda x: x >= 100 - p * 100)
CELLS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(-10**12, 10**12),
    st.sampled_from(["", "n/a", "inf", "-inf", "1,5", "1.5", "NaN", "abc", "1e400", "-0"]),
    st.none(),
)


@st.composite
def stamps(draw, rows: int) -> list:
    """A timestamp column: a regular grid spoiled one or more ways, in one of several notations."""
    freq = draw(st.sampled_from(["15min", "1h", "1D"]))
    index = pd.date_range("2024-03-30", periods=rows, freq=freq)
    if rows and draw(sometimes(0.12)):  # gaps
        keep = draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
        index = index[np.array(keep, dtype=bool)] if any(keep) else index
    values = list(index)
    if values and draw(sometimes(0.1)):  # duplicates
        values += draw(st.lists(st.sampled_from(values), max_size=3))
    if draw(sometimes(0.15)):  # unsorted: sorted and reported, still a valid table
        values = draw(st.permutations(values))
    notation = draw(st.sampled_from(["iso", "tz", "mixed_tz", "epoch_s", "epoch_ms", "day_first", "datetime"]))
    out: list = []
    for t in values:
        if notation == "iso":
            out.append(t.strftime("%Y-%m-%d %H:%M"))
        elif notation == "tz":
            out.append(t.tz_localize("Europe/Berlin", ambiguous=True, nonexistent="shift_forward").isoformat())
        elif notation == "mixed_tz":
            out.append(t.tz_localize(draw(st.sampled_from(["UTC", "Asia/Kolkata"]))).isoformat())
        elif notation == "epoch_s":
            out.append(int(t.value // 10**9))
        elif notation == "epoch_ms":
            out.append(float(t.value // 10**6))
        elif notation == "day_first":
            out.append(t.strftime("%d.%m.%Y %H:%M"))
        else:
            out.append(t)
    if out and draw(sometimes(0.08)):  # a few cells no parser can read
        for i in draw(st.lists(st.integers(0, len(out) - 1), max_size=2)):
            out[i] = draw(st.sampled_from(["", "n/a", "2024-13-45", "yesterday", None]))
    return out


@st.composite
def tables(draw) -> pd.DataFrame:
    rows = draw(st.integers(0, 5)) if draw(sometimes(0.08)) else draw(st.integers(120, 240))  # tiny, or enough
    time = draw(stamps(rows))
    n = len(time)
    # the column's own type (epoch numbers stay numbers, not text, when written to Parquet), object when mixed
    frame = pd.DataFrame({"timestamp": pd.Series(time, dtype=object).infer_objects()}) if n else pd.DataFrame({"timestamp": []})
    for _ in range(draw(st.sampled_from([1, 2, 3, 1, 2, 0]))):  # the first option is the simplest draw
        kind = draw(st.sampled_from(["float", "float", "int", "float", "constant", "inf", "float", "cells"]))
        if kind == "float":
            column = np.random.default_rng(draw(st.integers(0, 99))).standard_normal(n)
        elif kind == "int":
            column = np.arange(n) % 7
        elif kind == "constant":
            column = np.full(n, 3.0)
        elif kind == "inf":
            column = np.where(np.arange(n) % 5 == 0, np.inf, 1.0 * np.arange(n))
        else:
            column = pd.Series(draw(st.lists(CELLS, min_size=n, max_size=n)), dtype=object)
        frame[draw(NAMES)] = list(column) if kind == "cells" else column
    if draw(sometimes(0.1)):  # the timestamps elsewhere than in the first column
        frame = frame[list(frame.columns[1:]) + [frame.columns[0]]]
    return frame


@st.composite
def options(draw) -> dict:
    return {
        "reindex": draw(st.booleans()),
        "fix_duplicates": draw(st.sampled_from(["refuse", "first", "mean"])),
        "non_numeric": draw(st.sampled_from(["refuse", "missing"])),
        "drop_bad_columns": draw(st.booleans()),
        "timestamp_column": draw(st.sampled_from([None, "timestamp"])),
    }


@functools.lru_cache(maxsize=1)
def _composed() -> DictConfig:
    return compose_cfg(["data=csv", "data.path=unset", *WINDOWS])


def write(frame: pd.DataFrame, fmt: str, directory: Path) -> Path:
    if fmt == "parquet":
        path = directory / "data.parquet"
        frame = frame.astype({c: str for c in frame.columns if frame[c].dtype == object})  # Arrow needs one type
        frame.to_parquet(path, index=False)
    elif fmt == "parquet_index":
        path = directory / "data.parquet"
        frame = frame.astype({c: str for c in frame.columns if frame[c].dtype == object})
        frame.set_index(frame.columns[0]).to_parquet(path)
    elif fmt == "csv_semicolon":
        path = directory / "data.csv"
        frame.to_csv(path, sep=";", decimal=",", index=False)
    elif fmt == "empty":
        path = directory / "data.csv"
        path.write_text("")
    else:
        path = directory / "data.csv"
        frame.to_csv(path, index=False)
    return path


CLEAN = {"reindex": False, "fix_duplicates": "refuse", "non_numeric": "refuse", "drop_bad_columns": False,
         "timestamp_column": None}
_STEPS = pd.date_range("2024-03-30", periods=60, freq="15min").strftime("%Y-%m-%d %H:%M")


@settings(settings.get_profile(PROFILE))
# what the long runs found (README, Testing), kept as fixed cases: a Parquet file whose only column is its
# index; every row on one timestamp, collapsed to a single step; inf counted in a column then dropped
@example(frame=pd.DataFrame({"timestamp": [1711756800]}), fmt="parquet_index", opts=CLEAN)
@example(frame=pd.DataFrame({"timestamp": ["2024-03-30 00:00"] * 2, "sensor": [0, 1]}), fmt="csv",
         opts={**CLEAN, "fix_duplicates": "first"})
@example(frame=pd.DataFrame({"timestamp": _STEPS, "sensor": np.where(np.arange(60) % 5, 3.0, np.inf),
                             "value": np.random.default_rng(0).standard_normal(60)}),
         fmt="csv", opts={**CLEAN, "drop_bad_columns": True})
# local time across the DST change (+01:00 then +02:00): pandas 2 warned that mixed offsets will raise
@example(frame=pd.DataFrame({"timestamp": [t.isoformat() for t in pd.date_range(
    "2024-03-30", periods=120, freq="15min", tz="Europe/Berlin")], "sensor": np.arange(120) % 7}), fmt="csv", opts=CLEAN)
# two names that trimming makes one (" a", "a"): pandas handed back a table for a column, a TypeError
@example(frame=pd.DataFrame({"timestamp": _STEPS, " a": np.arange(60.0), "a": np.arange(60.0)}), fmt="parquet",
         opts=CLEAN)
@given(frame=tables(),
       fmt=st.sampled_from(["csv", "csv_semicolon", "parquet", "parquet_index", "csv", "csv_semicolon", "parquet",
                            "parquet_index", "csv", "csv_semicolon", "parquet", "parquet_index", "csv", "empty"]),
       opts=options())
def test_loader_returns_a_valid_table_or_one_line(frame: pd.DataFrame, fmt: str, opts: dict) -> None:
    cfg = copy.deepcopy(_composed())
    with tempfile.TemporaryDirectory(prefix="fuzz") as tmp:
        try:
            path = write(frame, fmt, Path(tmp))
        except (ValueError, TypeError, OverflowError, UnicodeEncodeError, ImportError):
            event("not writable")
            return  # pandas/Arrow cannot write this frame: no file a user could hand over
        except Exception as e:  # noqa: BLE001 - pyarrow's own error types
            if type(e).__module__.startswith("pyarrow"):
                event("not writable")
                return
            raise
        cfg.data.path = str(path)
        for key, value in opts.items():
            OmegaConf.update(cfg, f"data.{key}", value)
        try:
            data = prepare(cfg)
        except UserError as e:
            message = str(e)
            assert message and "\n" not in message, message
            event("refused: " + re.sub(r"data.path=\S+ ", "", message)[:40])  # --hypothesis-show-statistics: what refused it
            return
    event("valid table")
    table = data.table
    assert table.values.dtype == np.float32 and table.values.shape == (len(table.index), len(table.columns))
    assert not np.isinf(table.values).any()
    assert table.index.tz is None and table.index.is_monotonic_increasing and table.index.is_unique
    assert len(set(np.diff(table.index.asi8))) <= 1 or table.freq in ("MS", "M", "ME")  # one step: a regular grid
    assert np.isfinite(data.mean).all() and np.isfinite(data.std).all() and (data.std > 0).all()
    assert not np.isinf(data.normalized).any()
    assert set(table.non_finite) <= set(table.columns)
