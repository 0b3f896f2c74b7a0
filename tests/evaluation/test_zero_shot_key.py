"""What the zero-shot baseline's shared entries are keyed by (moirai_ft/evaluation/zero_shot.py): every
setting that changes its evaluation separates jobs; a training-only setting does not."""

from __future__ import annotations

import copy

import pytest
from omegaconf import OmegaConf

from conftest import compose_cfg
from moirai_ft.data.prepare import prepare
from moirai_ft.evaluation.zero_shot import TEST, VALIDATION, VALIDATION_FORECAST, data_fingerprint, entry_name

BASE = compose_cfg()


def name(changes: dict | None = None, kind: str = TEST, weights: str = "w", data: str = "d", device: str = "cpu") -> str:
    cfg = copy.deepcopy(BASE)
    for key, value in (changes or {}).items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return entry_name(kind, cfg, weights, data, device)


# settings that change what the zero-shot model is, what it sees or how it is scored
SEPARATES = [
    {"model.d_model": 32}, {"model.checkpoint": "/elsewhere"}, {"model.init": "pretrained"}, {"seed": 1},
    {"patch_size": 32}, {"context_length": 32}, {"prediction_length": 8},
    {"data.num_days": 31}, {"data.train_ratio": 0.6}, {"data.val_ratio": 0.15}, {"data.eval_stride": 48},
    {"data.mode": "M"}, {"data.targets": ["sensor_0"]}, {"data.known_covariates": ["sensor_1"]},
    {"data.test_start": "2024-01-20"}, {"val_max_windows": 32}, {"batch_size": 8},
    {"monitor": "val_crps"}, {"monitor_samples": 16},
    {"eval.num_samples": 50}, {"eval.max_windows": 16}, {"eval.batch_size": 4}, {"eval.seed": 3},
    {"hardware.precision": "bf16-mixed"}, {"hardware.accelerator": "gpu"}, {"hardware.devices": 2},
]
# settings that only steer training or the sweep
SHARES = [
    {"lr": 3e-5}, {"epochs": 7}, {"steps_per_epoch": 99}, {"warmup_steps": 5}, {"weight_decay": 0.0},
    {"scheduler.name": "cosine"}, {"patience": 9}, {"smoothing": 3}, {"val_check_interval": 0.5},
    {"pattern.name": "head_only"}, {"pattern.name": "freeze_ffn"}, {"prune.name": "asha"},
    {"prune.eval_max_windows": 4}, {"logger": None}, {"resume": False}, {"sweep_root": "/x"},
    {"hardware.compile": "default"}, {"hardware.progress_bar_refresh": 0}, {"eval.plot_windows": 0},
    {"calibrate": "conformal"}, {"blend": True}, {"blend_grid": [0.0, 1.0]},
]


@pytest.mark.parametrize("kind", [VALIDATION, TEST, VALIDATION_FORECAST])
def test_a_setting_that_changes_the_evaluation_separates_and_a_training_setting_shares(kind: str) -> None:
    base = name(kind=kind)
    assert base.startswith(kind)
    for changes in SEPARATES:
        assert name(changes, kind) != base, changes
    for changes in SHARES:
        assert name(changes, kind) == base, changes
    assert name(kind=VALIDATION) != name(kind=TEST)
    # LoRA's adapters add terms to the module (zero ones, but other operations): not the plain module's
    assert entry_name(kind, compose_cfg(["pattern=lora"]), "w", "d", "cpu") != base
    # the starting weights' hash, the data's and the device's numerics
    assert len({base, name(kind=kind, weights="w2"), name(kind=kind, data="d2"), name(kind=kind, device="gpu")}) == 4


def test_the_data_fingerprint_follows_the_content_and_the_splits() -> None:
    data = prepare(BASE)
    assert data_fingerprint(prepare(BASE)) == data_fingerprint(data)
    edited = prepare(BASE)
    # the same config over an edited file (a copy: under pandas 3's copy-on-write the values are a read-only view)
    edited.table.values = edited.table.values.copy()
    edited.table.values[3, 1] += 1.0
    assert data_fingerprint(edited) != data_fingerprint(data)
    moved = prepare(BASE)
    moved.test_start += 1
    assert data_fingerprint(moved) != data_fingerprint(data)
