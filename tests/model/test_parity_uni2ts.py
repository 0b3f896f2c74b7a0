"""moirai-ft's windows are uni2ts's fine-tuning samples: for the same series and window positions, every
field `Windows.batch` builds equals what `MoiraiFinetune(...).train_transform_map` produces on a dataset
written by uni2ts's own `SimpleFinetuneDatasetBuilder`, and a model's loss on both batches is equal.

Our side runs the real pipeline (a CSV read by `prepare`); uni2ts reads the series we normalised, so
both sides window exactly the same numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import default_collate
from uni2ts.data.builder.simple import SimpleFinetuneDatasetBuilder
from uni2ts.loss.packed import PackedNLLLoss
from uni2ts.model.moirai import MoiraiFinetune

from conftest import compose_cfg
from moirai_ft.data.prepare import PreparedData, prepare
from moirai_ft.model.load import random_module
from moirai_ft.data.windows import Batch

# context and prediction not multiples of the patch, so both ends are padded; windows 7 steps apart
CTX, PRED, PATCH, DISTANCE = 40, 20, 16, 7
FIELDS = ("target", "observed_mask", "sample_id", "time_id", "variate_id", "prediction_mask", "patch_size")


def telemetry_csv(path: Path) -> Path:
    """Three sensors with dropouts placed in the contexts and the horizons of the first train windows."""
    rng = np.random.default_rng(3)
    rows = 300
    t = np.arange(rows)
    values = np.stack([np.sin(2 * np.pi * t / 24 + k) * (k + 1) + 0.2 * rng.standard_normal(rows) for k in range(3)], 1)
    values[10:14, 0] = np.nan  # context of windows 0 and 1
    values[45:49, 0] = np.nan  # horizon of window 0
    values[50:61, 1] = np.nan  # horizons of windows 0-2, contexts after
    values[rng.random((rows, 3)) < 0.03] = np.nan  # scattered single dropouts
    index = pd.date_range("2024-01-01", periods=rows, freq="15min", name="timestamp")
    pd.DataFrame(values, index=index, columns=["ahu_1", "ahu_2", "chiller"]).to_csv(path, float_format="%.6f")
    return path


def ours(tmp_path: Path, mode: str) -> PreparedData:
    return prepare(
        compose_cfg([
            "data=csv", f"data.path={telemetry_csv(tmp_path / 'telemetry.csv')}", f"data.mode={mode}",
            f"context_length={CTX}", f"prediction_length={PRED}", f"patch_size={PATCH}",
            f"data.window_stride={DISTANCE}", "data.train_ratio=0.6", "data.val_ratio=0.2",
        ])
    )


def uni2ts_batch(data: PreparedData, module: torch.nn.Module, mode: str, tmp_path: Path) -> Batch:
    """uni2ts's samples of our train windows, in our window order, collated into one batch."""
    normalized = pd.DataFrame(data.normalized, index=data.table.index, columns=data.table.columns)
    csv = tmp_path / "normalized.csv"
    normalized.to_csv(csv, float_format="%.9g")  # 9 significant digits round-trip float32 exactly
    windows = len(data.train.starts)
    builder = SimpleFinetuneDatasetBuilder(
        dataset="telemetry", windows=windows, distance=DISTANCE, prediction_length=PRED,
        context_length=CTX, patch_size=PATCH, mode=mode, storage_path=tmp_path / "uni2ts",
    )
    builder.build_dataset(
        file=csv, dataset_type="wide" if mode == "S" else "wide_multivariate",
        offset=data.val_start, freq="15min",
    )
    finetune = MoiraiFinetune(
        min_patches=2, min_mask_ratio=0.15, max_mask_ratio=0.5, max_dim=128, num_training_steps=100,
        num_warmup_steps=0, module=module, context_length=CTX, prediction_length=PRED, patch_size=PATCH,
    )
    finetune.seq_fields = finetune.seq_fields + ("sample_id",)  # as uni2ts's finetune configs add it
    dataset = builder.load_dataset(finetune.train_transform_map)
    columns = data.train.series.shape[0] if mode == "S" else 1
    assert len(dataset) == windows * columns
    # uni2ts's sample i is (window, column) = divmod(i, columns); ours is column-major: column * windows + window
    order = [w * columns + c for c in range(columns) for w in range(windows)]
    return default_collate([dataset[i] for i in order])


@pytest.mark.parametrize("mode", ["S", "M"])
def test_windows_and_loss_equal_uni2ts(tmp_path: Path, mode: str) -> None:
    data = ours(tmp_path, mode)
    assert data.train.starts.tolist() == list(range(CTX, data.val_start - PRED + 1, DISTANCE))
    ids = torch.arange(len(data.train))
    raw = data.train.raw(ids)
    assert torch.isnan(raw[..., :CTX]).any() and torch.isnan(raw[..., CTX:]).any()  # gaps on both sides

    torch.manual_seed(0)
    module = random_module(compose_cfg().model).eval()
    theirs = uni2ts_batch(data, module, mode, tmp_path)
    mine = data.train.batch(ids)

    assert set(theirs) == set(FIELDS)
    for field in FIELDS:
        assert mine[field].dtype == theirs[field].dtype, field
        assert mine[field].shape == theirs[field].shape, field
        assert torch.equal(mine[field], theirs[field]), field
    assert not mine["observed_mask"].all()  # the missing steps are masked out, not imputed into the loss

    loss = PackedNLLLoss()
    with torch.no_grad():
        values = [
            loss(
                pred=module(**{k: b[k] for k in FIELDS}),
                **{k: b[k] for k in ("target", "prediction_mask", "observed_mask", "sample_id", "variate_id")},
            )
            for b in (mine, theirs)
        ]
    assert torch.isfinite(values[0])
    assert abs(values[0] - values[1]) <= 1e-5 * abs(values[1])
