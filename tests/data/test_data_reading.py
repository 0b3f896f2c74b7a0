"""Files pandas misreads with its defaults, and values the model cannot take, read as the user meant them:
separators and decimal marks, Unix epoch timestamps, Parquet indexes and directories, time zones, and
non-finite values (missing, counted per column). Each class is tested over its variants, and the table
read back is compared with the table written."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import DictConfig

from conftest import compose_cfg
from moirai_ft.data.loading import load_table
from moirai_ft.data.prepare import prepare
from moirai_ft.errors import UserError

ROWS = 30 * 96  # 30 days at 15 minutes: enough windows for the TINY settings
STAMPS = pd.date_range("2024-01-01", periods=ROWS, freq="15min")


def values(columns: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(rng.standard_normal((ROWS, columns)).round(3), columns=[f"sensor_{i}" for i in range(columns)])


@functools.lru_cache(maxsize=None)
def _composed(extra: tuple[str, ...]) -> DictConfig:
    return compose_cfg(["data=csv", "data.path=unset", *extra])


def config(path: Path, *extra: str) -> DictConfig:
    """The composed config with data.path set (composing once per set of overrides keeps the file fast)."""
    cfg = copy.deepcopy(_composed(tuple(extra)))
    cfg.data.path = str(path)
    return cfg


def load(path: Path, *extra: str):
    cfg = config(path, *extra)
    return load_table(cfg.data, cfg.seed)


def assert_same(table, frame: pd.DataFrame, stamps: pd.DatetimeIndex = STAMPS) -> None:
    assert table.columns == list(frame.columns)
    np.testing.assert_allclose(table.values, frame.to_numpy(np.float32), rtol=1e-6)
    assert (table.index == stamps).all()


# --- separators and decimal marks --------------------------------------------------------------


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"])
@pytest.mark.parametrize("decimal", [".", ","])
def test_csv_separator_and_decimal_mark_are_inferred(sep: str, decimal: str, tmp_path: Path) -> None:
    if sep == decimal:
        pytest.skip("a decimal comma in a comma-separated file needs quotes: not an export anyone makes")
    frame = values()
    path = tmp_path / "export.csv"
    frame.set_axis(STAMPS.strftime("%Y-%m-%d %H:%M"), axis=0).rename_axis("timestamp").to_csv(
        path, sep=sep, decimal=decimal
    )
    table = load(path)
    assert_same(table, frame)
    inferred = " ".join(table.notes)
    assert (repr(sep) in inferred) == (sep != ",") and (repr(decimal) in inferred) == (decimal != ".")


def test_csv_separator_and_decimal_overrides(tmp_path: Path) -> None:
    frame = values()
    path = tmp_path / "export.csv"
    frame.set_axis(STAMPS, axis=0).to_csv(path, sep=";", decimal=",")
    table = load(path, "data.sep=';'", "data.decimal=','")
    assert_same(table, frame)
    assert not any("inferred" in n for n in table.notes)  # nothing was guessed
    with pytest.raises(UserError) as err:  # the wrong override: the message names the setting
        load(path, "data.sep=';'", "data.decimal='.'")
    assert "data.non_numeric" in str(err.value) and "\n" not in str(err.value)


# --- Unix epoch timestamps ---------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("as_float", [False, True])
def test_epoch_timestamps_in_every_unit(unit: str, as_float: bool, tmp_path: Path) -> None:
    frame = values()
    # in nanoseconds: pandas 3 builds ranges in microseconds
    epoch = STAMPS.as_unit("ns").asi8 // {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
    if as_float:
        if unit in ("us", "ns"):
            pytest.skip("float64 cannot hold every microsecond/nanosecond epoch exactly")
        epoch = epoch.astype(np.float64)
    path = tmp_path / "epoch.csv"
    frame.assign(**{"time": epoch})[["time", *frame.columns]].to_csv(path, index=False)
    table = load(path)
    assert_same(table, frame)
    assert any(f"in {unit} (inferred" in n for n in table.notes)
    assert_same(load(path, f"data.timestamp_unit={unit}"), frame)  # the override reads it the same


def test_numbers_that_are_no_epoch_name_timestamp_unit(tmp_path: Path) -> None:
    frame = values()
    path = tmp_path / "counter.csv"
    frame.assign(step=np.arange(ROWS) * 900)[["step", *frame.columns]].to_csv(path, index=False)
    with pytest.raises(UserError) as err:
        load(path)
    assert "data.timestamp_unit" in str(err.value) and "data.timestamp_column" in str(err.value)
    # seconds since 1970: the user says so
    table = load(path, "data.timestamp_unit=s")
    assert table.index[0] == pd.Timestamp("1970-01-01") and len(table.index) == ROWS


# --- Parquet: timestamps in the index, partitioned directories ----------------------------------


@pytest.mark.parametrize("index", ["datetime", "string", "named_string", "tz_aware"])
def test_parquet_timestamps_in_its_index(index: str, tmp_path: Path) -> None:
    frame = values()
    stamps = {
        "datetime": STAMPS, "string": STAMPS.strftime("%Y-%m-%d %H:%M"),
        "named_string": pd.Index(STAMPS.strftime("%Y-%m-%dT%H:%M:%S"), name="time"),
        "tz_aware": STAMPS.tz_localize("UTC").tz_convert("Europe/Berlin"),
    }[index]
    path = tmp_path / "indexed.parquet"
    frame.set_axis(stamps, axis=0).to_parquet(path)
    table = load(path)
    assert_same(table, frame)


def test_parquet_row_number_index_is_not_taken_for_timestamps(tmp_path: Path) -> None:
    frame = values().assign(timestamp=STAMPS)
    frame = frame[["timestamp", "sensor_0", "sensor_1", "sensor_2"]]
    path = tmp_path / "filtered.parquet"
    frame.set_axis(np.arange(ROWS) * 2 + 7, axis=0).to_parquet(path)  # a filtered frame's row numbers
    assert_same(load(path), frame.drop(columns="timestamp"))


def test_partitioned_parquet_directory_is_read(tmp_path: Path) -> None:
    frame = values().assign(timestamp=STAMPS, month=STAMPS.month)
    frame.to_parquet(tmp_path / "dataset", partition_cols=["month"])
    table = load(tmp_path / "dataset", "data.timestamp_column=timestamp", "data.exclude=[month]")
    assert_same(table, values())


def test_directory_without_parquet_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "exports").mkdir()
    values().to_csv(tmp_path / "exports" / "a.csv")
    with pytest.raises(UserError) as err:
        load(tmp_path / "exports")
    assert "is a directory without Parquet files" in str(err.value) and "\n" not in str(err.value)


# --- time zones --------------------------------------------------------------------------------


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/New_York", "+05:30"])
def test_tz_aware_timestamps_become_utc_with_a_note(zone: str, tmp_path: Path) -> None:
    frame = values()
    local = STAMPS.tz_localize("UTC").tz_convert(zone if zone[0] != "+" else "Asia/Kolkata")
    path = tmp_path / "tz.csv"
    frame.assign(timestamp=local.strftime("%Y-%m-%dT%H:%M:%S%z"))[["timestamp", *frame.columns]].to_csv(path, index=False)
    table = load(path)
    assert_same(table, frame)  # the instants are kept; a DST change leaves no gap or duplicate
    assert any("converted to UTC" in n for n in table.notes)


# --- non-finite values -------------------------------------------------------------------------


def _spoil(frame: pd.DataFrame, how: str) -> dict[str, int]:
    """Non-finite cells of one kind; returns the expected count per column."""
    if how == "inf_cells":
        frame.loc[[5, 50, 500], "sensor_1"] = np.inf
        frame.loc[[7], "sensor_2"] = -np.inf
        return {"sensor_1": 3, "sensor_2": 1}
    if how == "beyond_float32":  # finite in the file, infinite once float32
        frame.loc[[9, 10], "sensor_0"] = 1e39
        return {"sensor_0": 2}
    if how == "inf_text":  # written as text: pandas reads inf, -inf, Infinity
        frame["sensor_2"] = frame["sensor_2"].astype(object)
        frame.loc[[1, 2, 3], "sensor_2"] = ["inf", "-inf", "Infinity"]
        return {"sensor_2": 3}
    raise ValueError(how)


@pytest.mark.parametrize("how", ["inf_cells", "beyond_float32", "inf_text"])
@pytest.mark.parametrize("layout", ["wide", "long"])
def test_non_finite_values_are_missing_and_counted(how: str, layout: str, tmp_path: Path) -> None:
    frame = values()
    expected = _spoil(frame, how)
    path = tmp_path / "data.csv"
    if layout == "wide":
        frame.assign(timestamp=STAMPS)[["timestamp", *frame.columns]].to_csv(path, index=False)
        extra = []
    else:
        long = frame.assign(timestamp=STAMPS).melt(id_vars="timestamp", var_name="item_id", value_name="value")
        long.to_csv(path, index=False)
        extra = ["data=long"]
    cfg = config(path, *extra)
    data = prepare(cfg)
    assert data.table.non_finite == expected
    values_read = data.table.values
    assert not np.isinf(values_read).any() and np.isfinite(data.normalized[~np.isnan(data.normalized)]).all()
    assert int(np.isnan(values_read).sum()) == sum(expected.values())
    assert any("non-finite" in n for n in data.table.notes)
    data.save_normalization(tmp_path / "normalization.json")
    saved = json.loads((tmp_path / "normalization.json").read_text())
    assert saved["non_finite"] == expected and all(np.isfinite(saved["mean"])) and all(np.isfinite(saved["std"]))
    # the windows the model sees mark them unobserved
    batch = data.train.batch(torch.arange(min(len(data.train), 256)))
    target, observed = batch["target"].numpy(), batch["observed_mask"].numpy()
    assert np.isfinite(target[observed]).all() and not observed[np.isnan(target)].any()


@pytest.mark.parametrize("fill", [np.inf, -np.inf, "mixed"])
def test_column_non_finite_everywhere_is_refused_like_an_empty_one(fill, tmp_path: Path) -> None:
    frame = values()
    frame["sensor_1"] = np.where(np.arange(ROWS) % 2, np.inf, -np.inf) if fill == "mixed" else fill
    path = tmp_path / "data.csv"
    frame.assign(timestamp=STAMPS)[["timestamp", *frame.columns]].to_csv(path, index=False)
    cfg = config(path)
    with pytest.raises(UserError) as err:
        prepare(cfg)
    assert "'sensor_1' has no values" in str(err.value) and "data.drop_bad_columns=true" in str(err.value)
    data = prepare(config(path, "data.drop_bad_columns=true"))
    assert data.table.columns == ["sensor_0", "sensor_2"]


# --- day and month: 03.04.2024 is the 3rd of April or March the 4th; the calendar decides --------------------

def test_ambiguous_day_first_export_trains_with_the_right_calendar(tmp_path: Path) -> None:
    """A European export: `;`, decimal commas, `%d.%m.%Y %H:%M`. Read month-first, the 2nd of January
    becomes February 1st and the grid breaks in 12 gaps; day-first is the only regular reading."""
    from moirai_ft.train.job import run

    path = tmp_path / "export.csv"
    frame = values().set_axis(STAMPS, axis=0)
    frame.to_csv(path, sep=";", decimal=",", date_format="%d.%m.%Y %H:%M", index_label="Zeitstempel")
    assert "02.01.2024 00:00;" in path.read_text()  # ambiguous: both fields <= 12
    table = load(path)
    assert_same(table, frame)
    assert any("read day first" in n and "data.timestamp_format" in n for n in table.notes)
    job = tmp_path / "job"
    metrics = run(compose_cfg(["data=csv", f"data.path={path}", "eval.num_samples=4", "eval.plot_windows=0"]), job)
    assert metrics["status"] == "completed", metrics.get("error")
    saved = json.loads((job / "normalization.json").read_text())
    # the job's calendar: 15-minute steps from New Year, every row kept, no reindexing
    assert saved["freq"] == table.freq == pd.tseries.frequencies.to_offset("15min").freqstr
    assert saved["rows"] == ROWS and saved["start"] == "2024-01-01 00:00:00"
    assert not any("reindex" in n for n in saved["notes"])


@pytest.mark.parametrize("case, stamps, why", [
    # ambiguous dates in shuffled rows: neither reading increases
    ("neither", pd.DatetimeIndex(np.random.default_rng(0).permutation(pd.date_range("2024-01-01", periods=96, freq="h"))),
     "neither order"),
    # the 1st..12th of January daily: day-first is daily, month-first the 1st of each month: both regular
    ("both", pd.date_range("2024-01-01", periods=12, freq="D"), "both orders"),
])
def test_a_day_month_order_the_calendar_cannot_decide_is_refused_naming_timestamp_format(
        tmp_path: Path, case: str, stamps: pd.DatetimeIndex, why: str) -> None:
    path = tmp_path / f"{case}.csv"
    pd.DataFrame({"a": np.arange(len(stamps), dtype=float)}, index=stamps).to_csv(path, date_format="%d.%m.%Y %H:%M")
    with pytest.raises(UserError) as err:
        load(path)
    message = str(err.value)
    assert "\n" not in message and why in message
    assert "data.timestamp_format='%d.%m.%Y %H:%M'" in message and "reindex" not in message


def test_columns_named_alike_after_trimming_are_refused_in_one_line(tmp_path: Path) -> None:
    """Found by the fuzzer: ' a' and 'a\\n' are one name once trimmed, and pandas then hands back a table
    for what should be a column."""
    path = tmp_path / "twins.csv"
    frame = values(2).set_axis(STAMPS, axis=0).set_axis([" a", "a\t"], axis=1)
    frame.to_csv(path, date_format="%Y-%m-%d %H:%M")
    with pytest.raises(UserError) as err:
        load(path)
    assert "\n" not in str(err.value) and "2 columns named 'a'" in str(err.value)
