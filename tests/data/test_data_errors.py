"""Bad inputs stop the job before any model is loaded, with one line naming the fix and nothing written
that looks like a result. Every case runs the job in-process (`job.run`, what train.py calls); a few also
run train.py as a user would, for the exit code and stderr."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

from conftest import TINY, compose_cfg, run_train
from moirai_ft.artifacts import CHECKPOINTS, HISTORY, METRICS
from moirai_ft.data.prepare import prepare
from moirai_ft.errors import UserError
from moirai_ft.train.job import run

ROWS = 30 * 96  # 30 days at 15 minutes: enough windows for the TINY settings


def telemetry(rows: int = ROWS, columns: int = 3) -> pd.DataFrame:
    """A clean wide frame (timestamp column first) that the cases below spoil one way each."""
    rng = np.random.default_rng(0)
    stamps = pd.date_range("2024-01-01", periods=rows, freq="15min")
    frame = pd.DataFrame(rng.standard_normal((rows, columns)).round(3), columns=[f"sensor_{i}" for i in range(columns)])
    frame.insert(0, "timestamp", stamps.strftime("%Y-%m-%d %H:%M"))
    return frame


def csv(frame: pd.DataFrame) -> Callable[[Path], Path]:
    def write(tmp: Path) -> Path:
        frame.to_csv(tmp / "data.csv", index=False)
        return tmp / "data.csv"

    return write


def spoiled(how: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], Path]:
    return csv(how(telemetry()))


def _text_column(f: pd.DataFrame) -> pd.DataFrame:
    f["status"] = np.where(np.arange(len(f)) % 2 == 0, "occupied", "unoccupied")
    return f


def _all_nan(f: pd.DataFrame) -> pd.DataFrame:
    f["sensor_1"] = np.nan
    return f


def _bad_stamps(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[[100, 2000], "timestamp"] = ["2024-01-02 25:00", "n/a"]
    return f


def _duplicated(f: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([f, f.iloc[[50, 51, 52]]]).sort_values("timestamp", kind="stable")


def _irregular(f: pd.DataFrame) -> pd.DataFrame:
    return f.drop(index=range(500, 510))  # ten rows the logger never wrote


def _stray_year(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[len(f)] = ["2025-06-01 00:00", 0.0, 0.0, 0.0]  # one row a year after the others
    return f


def _empty(tmp: Path) -> Path:
    (tmp / "data.csv").write_text("")
    return tmp / "data.csv"


def _missing(tmp: Path) -> Path:
    return tmp / "no_such_file.csv"


# (file, extra overrides, what the one-line message must name)
CASES: dict[str, tuple[Callable[[Path], Path] | None, list[str], str]] = {
    "missing_file": (_missing, [], "data.path"),
    "empty_file": (_empty, [], "is empty"),
    "no_timestamp_column": (spoiled(lambda f: f.drop(columns="timestamp")), [], "data.timestamp_column"),
    "unparseable_timestamps": (spoiled(_bad_stamps), [], "data.timestamp_format"),
    "text_column": (spoiled(_text_column), [], "data.exclude=[status]"),
    "all_nan_column": (spoiled(_all_nan), [], "data.drop_bad_columns=true"),
    "duplicated_timestamps": (spoiled(_duplicated), [], "data.fix_duplicates"),
    "irregular_spacing": (spoiled(_irregular), [], "data.reindex=true"),
    # the grid is counted before it is built: a 1 ms grid over 30 days would be 2.6 billion rows
    "freq_far_too_fine": (csv(telemetry()), ["data.freq=1ms", "data.reindex=true"], "set data.freq"),
    "stray_timestamp": (spoiled(_stray_year), ["data.reindex=true"], "remove stray timestamps"),
    "too_short": (csv(telemetry(rows=100)), [], "shorter context_length"),
    "patch_size_not_in_model": (None, ["patch_size=24"], "set patch_size to one of them"),
    "M_over_max_seq_len": (None, ["data.mode=M", "data.num_columns=20", "context_length=512"], "data.mode=S"),
    "variates_over_max_dim": (
        None, ["data.mode=M", "data.num_columns=130", "context_length=16", "prediction_length=16"], "max_dim",
    ),
    "glob_selects_nothing": (csv(telemetry()), ["data.columns=[zone_*]"], "matches no column"),
}


def overrides(case: str, tmp: Path) -> list[str]:
    write, extra, _ = CASES[case]
    return (["data=csv", f"data.path={write(tmp)}"] if write else []) + extra


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_before_training(case: str, tmp_path: Path) -> None:
    expected = CASES[case][2]
    cfg = compose_cfg(overrides(case, tmp_path))
    if case != "patch_size_not_in_model":  # that one is refused by config validation, before any data
        with pytest.raises(UserError) as err:
            prepare(cfg)
        assert expected in str(err.value) and "\n" not in str(err.value)

    job_dir = tmp_path / "job"
    metrics = run(cfg, job_dir)
    assert metrics["status"] == "failed" and metrics["error_type"] == "config", metrics
    assert expected in metrics["error"] and "\n" not in metrics["error"]
    assert "best_val_loss" not in metrics
    assert json.loads((job_dir / METRICS).read_text())["status"] == "failed"
    assert not (job_dir / HISTORY).exists() and not (job_dir / CHECKPOINTS).exists()
    assert not (job_dir / "normalization.json").exists()


@pytest.mark.parametrize("case", ["missing_file", "text_column", "M_over_max_seq_len"])
def test_train_py_exits_2_with_one_line(case: str, tmp_path: Path) -> None:
    proc = run_train(TINY + overrides(case, tmp_path), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and CASES[case][2] in errors[0], proc.stderr[-2000:]
    assert not list(tmp_path.rglob(HISTORY)) and not list(tmp_path.rglob(CHECKPOINTS))
    (metrics_file,) = tmp_path.rglob(METRICS)
    metrics = json.loads(metrics_file.read_text())
    assert metrics["status"] == "failed" and "best_val_loss" not in metrics
