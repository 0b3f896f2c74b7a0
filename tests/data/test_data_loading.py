"""Reading users' files: wide CSV and Parquet, long format, column selection, sorting, duplicates,
irregular spacing, text cells and bad columns, each through `prepare` on a real file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pandas.tseries.frequencies import to_offset

from conftest import compose_cfg
from moirai_ft.data.prepare import PreparedData, prepare
from moirai_ft.errors import UserError

ROWS = 30 * 96
QUARTER_HOUR = to_offset("15min").freqstr


def telemetry(rows: int = ROWS, names: tuple[str, ...] = ("ahu_1", "ahu_2", "chiller_1")) -> pd.DataFrame:
    """A wide frame indexed by 15-minute timestamps, with a few dropouts."""
    rng = np.random.default_rng(1)
    values = rng.standard_normal((rows, len(names))).round(3) * 5 + 20
    values[rng.random(values.shape) < 0.02] = np.nan
    index = pd.date_range("2024-03-01", periods=rows, freq="15min", name="timestamp")
    return pd.DataFrame(values, index=index, columns=list(names))


def load(path: Path, *extra: str) -> PreparedData:
    return prepare(compose_cfg(["data=csv", f"data.path={path}", *extra]))


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, date_format="%Y-%m-%d %H:%M")
    return path


def assert_same_values(data: PreparedData, frame: pd.DataFrame) -> None:
    expected = frame.to_numpy(np.float32)
    assert data.table.columns == list(frame.columns)
    assert np.array_equal(np.isnan(data.table.values), np.isnan(expected))
    assert np.array_equal(np.nan_to_num(data.table.values), np.nan_to_num(expected))


def test_wide_csv_infers_frequency_and_keeps_gaps_missing(tmp_path: Path) -> None:
    frame = telemetry()
    data = load(write_csv(frame, tmp_path / "wide.csv"))
    assert_same_values(data, frame)
    assert data.table.freq == QUARTER_HOUR and data.table.index.equals(frame.index)
    # a NaN is never imputed into the target: its step is unobserved in the batch
    ids = torch.arange(len(data.train))
    raw = data.train.raw(ids)
    assert np.isnan(raw.numpy()).any()
    s = data.spec
    observed = data.train.batch(ids)["observed_mask"].reshape(len(ids), s.tokens, -1)[..., : s.patch_size]
    observed = observed.reshape(len(ids), -1)[:, s.context_pad : s.context_pad + s.context_length + s.prediction_length]
    assert np.array_equal(observed.numpy(), ~np.isnan(raw[:, 0].numpy()))


def test_parquet_with_datetime_index_reads_like_csv(tmp_path: Path) -> None:
    frame = telemetry()
    frame.astype(np.float32).to_parquet(tmp_path / "wide.parquet")
    assert_same_values(load(tmp_path / "wide.parquet"), frame)


def test_long_format_pivots_items_into_columns(tmp_path: Path) -> None:
    frame = telemetry()
    long = frame.reset_index().melt(id_vars="timestamp", var_name="sensor", value_name="reading").dropna()
    long = long.sample(frac=1.0, random_state=0)  # any row order
    long.to_csv(tmp_path / "long.csv", index=False, date_format="%Y-%m-%d %H:%M")
    names = ["data=long", "data.item_column=sensor", "data.value_column=reading"]
    assert_same_values(load(tmp_path / "long.csv", *names), frame)

    pd.concat([long, long.iloc[:1]]).to_csv(tmp_path / "again.csv", index=False, date_format="%Y-%m-%d %H:%M")
    with pytest.raises(UserError, match=r"1 rows repeat an earlier \(item, timestamp\) pair.*data.fix_duplicates"):
        load(tmp_path / "again.csv", *names)
    assert_same_values(load(tmp_path / "again.csv", *names, "data.fix_duplicates=last"), frame)


def test_long_format_names_the_missing_column_option(tmp_path: Path) -> None:
    telemetry().reset_index().melt(id_vars="timestamp").to_csv(tmp_path / "long.csv", index=False)
    with pytest.raises(UserError, match="data.item_column"):
        load(tmp_path / "long.csv", "data=long")


def test_columns_by_glob_and_exclusion(tmp_path: Path) -> None:
    frame = telemetry(names=("ahu_1", "ahu_2", "ahu_3", "chiller_1"))
    path = write_csv(frame, tmp_path / "wide.csv")
    data = load(path, "data.columns=[ahu_*,chiller_1]", "data.exclude=[ahu_2]")
    assert_same_values(data, frame[["ahu_1", "ahu_3", "chiller_1"]])
    with pytest.raises(UserError, match="data.exclude entry 'boiler' matches no column"):
        load(path, "data.exclude=[boiler]")


def test_unsorted_rows_are_sorted_with_their_values(tmp_path: Path) -> None:
    frame = telemetry()
    shuffled = frame.sample(frac=1.0, random_state=0)
    data = load(write_csv(shuffled, tmp_path / "wide.csv"))
    assert_same_values(data, frame)
    assert any("sorted" in n for n in data.table.notes)


@pytest.mark.parametrize("how", ["first", "last", "mean"])
def test_duplicated_timestamps_are_collapsed_when_asked(tmp_path: Path, how: str) -> None:
    frame = telemetry()
    again = frame.iloc[[100, 200]] + 1.0  # the same timestamps, other readings
    path = write_csv(pd.concat([frame, again]), tmp_path / "wide.csv")
    with pytest.raises(UserError, match="2 rows repeat an earlier timestamp.*data.fix_duplicates"):
        load(path)
    data = load(path, f"data.fix_duplicates={how}")
    expected = frame.copy()
    rows = expected.index[[100, 200]]
    if how == "last":
        expected.loc[rows] = again.to_numpy()
    elif how == "mean":
        expected.loc[rows] = (frame.loc[rows].to_numpy() + again.to_numpy()) / 2
    assert_same_values(data, expected)  # first: the file's first row


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_irregular_parquet_timestamps_of_any_resolution_find_their_step(tmp_path: Path, unit: str) -> None:
    """Parquet keeps the writer's timestamp unit (pandas 3 also parses text to microseconds); the step
    inferred from an irregular index must still be 15 minutes, not 900 of that unit read as nanoseconds."""
    frame = telemetry()
    lost = frame.index[[10, 11, 500]]
    gappy = frame.drop(index=lost)
    gappy.index = gappy.index.as_unit(unit)
    path = tmp_path / "wide.parquet"
    gappy.to_parquet(path)
    with pytest.raises(UserError, match=rf"irregular spacing at {QUARTER_HOUR}: 3 time steps missing in 2 gaps"):
        load(path)
    expected = frame.copy()
    expected.loc[lost] = np.nan
    assert_same_values(load(path, "data.reindex=true"), expected)


def test_irregular_spacing_is_reindexed_when_asked(tmp_path: Path) -> None:
    frame = telemetry()
    lost = frame.index[[300, 301, 302, 1500]]
    shifted = frame.drop(index=lost)
    moved = shifted.index.to_series()
    moved.iloc[700] += pd.Timedelta(seconds=40)  # a logger clock running late: its step is empty until snapped
    path = tmp_path / "wide.csv"
    shifted.set_axis(pd.DatetimeIndex(moved, name="timestamp"), axis=0).to_csv(path)
    with pytest.raises(UserError, match=r"5 time steps missing in 3 gaps and 1 timestamps off the grid.*data.reindex=true"):
        load(path)
    data = load(path, "data.reindex=true")
    expected = frame.copy()
    expected.loc[lost] = np.nan
    assert_same_values(data, expected)
    assert data.table.index.equals(frame.index) and data.table.freq == QUARTER_HOUR


def test_text_cells_become_missing_when_asked(tmp_path: Path) -> None:
    frame = telemetry()
    text = frame.astype(object)
    text.iloc[10, 1] = "ERR"
    path = write_csv(text, tmp_path / "wide.csv")
    with pytest.raises(UserError, match="column 'ahu_2' holds text .*data.non_numeric=missing"):
        load(path)
    expected = frame.copy()
    expected.iloc[10, 1] = np.nan
    assert_same_values(load(path, "data.non_numeric=missing"), expected)


def test_day_first_timestamps_with_a_format(tmp_path: Path) -> None:
    frame = telemetry()
    frame.to_csv(tmp_path / "wide.csv", date_format="%d.%m.%Y %H:%M")
    data = load(tmp_path / "wide.csv", "data.timestamp_format='%d.%m.%Y %H:%M'")
    assert data.table.index.equals(frame.index)


def test_mostly_missing_and_constant_columns_reported_then_dropped_when_asked(tmp_path: Path) -> None:
    frame = telemetry(names=("ahu_1", "sparse", "flat", "ahu_2"))
    frame.loc[frame.index[200:], "sparse"] = np.nan
    frame["flat"] = 21.0
    path = write_csv(frame, tmp_path / "wide.csv")
    kept = load(path)
    assert kept.table.columns == list(frame.columns)
    notes = " ".join(kept.table.notes)
    assert "sparse" in notes and "flat" in notes
    assert np.isfinite(kept.normalized[:, 2]).all()  # constant: centred, not divided by zero
    dropped = load(path, "data.drop_bad_columns=true")
    assert dropped.table.columns == ["ahu_1", "ahu_2"]
    assert_same_values(dropped, frame[["ahu_1", "ahu_2"]])
