"""Splits in time (ratios or dates), train-only normalisation saved for the job, and the windows of each
split: horizons stay inside their split, contexts may reach back, mode M packs every column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from conftest import compose_cfg
from moirai_ft.data.prepare import PreparedData, prepare


def windows_cover(data: PreparedData, split: str) -> tuple[int, int, int]:
    """(first context row, first target row, last target row) over every window of a split."""
    w = getattr(data, split)
    _, start = w.locate(torch.arange(len(w)))
    return int(start.min()) - data.spec.context_length, int(start.min()), int(start.max()) + data.spec.prediction_length - 1


def test_horizons_stay_in_their_split_and_contexts_reach_back() -> None:
    data = prepare(compose_cfg(["data.window_stride=3"]))
    n = len(data.table.index)
    train, val, test = (windows_cover(data, s) for s in ("train", "val", "test"))
    assert train[0] == 0 and train[2] < data.val_start
    assert val[1] >= data.val_start and val[2] < data.test_start and val[0] < data.val_start
    assert test[1] >= data.test_start and test[2] < n and test[0] < data.test_start
    assert val[1] == data.val_start and test[1] == data.test_start  # no target row skipped at a split start


def test_splits_by_dates(tmp_path: Path) -> None:
    data = prepare(compose_cfg(["data.val_start=2024-01-20", "data.test_start='2024-01-25 12:00'"]))
    index = data.table.index
    assert index[data.val_start] == pd.Timestamp("2024-01-20") and index[data.val_start - 1] < pd.Timestamp("2024-01-20")
    assert index[data.test_start] == pd.Timestamp("2024-01-25 12:00")
    data.save_normalization(tmp_path / "normalization.json")
    saved = json.loads((tmp_path / "normalization.json").read_text())
    assert saved["val_start"] == str(pd.Timestamp("2024-01-20")) and saved["columns"] == data.table.columns


def test_normalisation_uses_the_train_split_only(tmp_path: Path) -> None:
    data = prepare(compose_cfg())
    train = data.table.values[: data.val_start].astype(np.float64)
    assert np.allclose(data.mean, np.nanmean(train, axis=0), rtol=1e-5)
    assert np.allclose(data.std, np.nanstd(train, axis=0, ddof=1), rtol=1e-4)
    back = data.normalized * data.std + data.mean  # what a forecast maps back with
    observed = ~np.isnan(data.table.values)
    assert np.allclose(back[observed], data.table.values[observed], rtol=1e-4, atol=1e-3)

    # a wild test split changes nothing about the statistics
    frame = pd.DataFrame(data.table.values, index=data.table.index, columns=data.table.columns)
    frame.iloc[data.test_start :] *= 1000.0
    frame.to_csv(tmp_path / "wild.csv")
    wild = prepare(compose_cfg(["data=csv", f"data.path={tmp_path / 'wild.csv'}"]))
    assert wild.val_start == data.val_start
    assert np.allclose(wild.mean, data.mean, rtol=1e-5) and np.allclose(wild.std, data.std, rtol=1e-4)

    data.save_normalization(tmp_path / "normalization.json")
    saved = json.loads((tmp_path / "normalization.json").read_text())
    assert np.allclose(saved["mean"], data.mean) and np.allclose(saved["std"], data.std)
    assert saved["freq"] == data.table.freq


def test_mode_m_packs_every_column_variate_major() -> None:
    s_data = prepare(compose_cfg(["data.num_columns=4"]))
    m_data = prepare(compose_cfg(["data.num_columns=4", "data.mode=M"]))
    spec, v = m_data.spec, 4
    assert len(s_data.train) == v * len(m_data.train) and m_data.train.num_variates == v
    ids = torch.tensor([0, 5, len(m_data.train) - 1])
    batch = m_data.train.batch(ids)
    assert batch["target"].shape == (3, v * spec.tokens, spec.max_patch_size)
    assert torch.equal(batch["variate_id"][0], torch.arange(v).repeat_interleave(spec.tokens))
    assert torch.equal(batch["time_id"][0], torch.arange(spec.tokens).repeat(v))
    assert int(batch["prediction_mask"][0].sum()) == v * spec.prediction_tokens
    # variate k of an M window is the S window of column k at the same start
    n = len(s_data.train.starts)
    for k in range(v):
        s_batch = s_data.train.batch(k * n + ids)
        block = slice(k * spec.tokens, (k + 1) * spec.tokens)
        assert torch.equal(batch["target"][:, block], s_batch["target"])
        assert torch.equal(batch["observed_mask"][:, block], s_batch["observed_mask"])
