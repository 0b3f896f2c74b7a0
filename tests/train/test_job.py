"""A tiny job end to end, in process: artifacts and their contract, learning, early stopping."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from conftest import compose_cfg
from moirai_ft.result import TRAINED_FIELDS, JobResult
from moirai_ft.train.job import run

CONTRACT = TRAINED_FIELDS  # every field a trained job writes (moirai_ft/result.py)


@pytest.fixture(scope="module")
def learning_job(tmp_path_factory) -> Path:
    """An easy signal and a healthy lr: two epochs with two checks each."""
    job = tmp_path_factory.mktemp("job")
    cfg = compose_cfg(["epochs=2", "steps_per_epoch=10", "val_check_interval=0.5", "lr=3e-3",
                       "scheduler=cosine", "warmup_steps=2", "patience=10"])
    run(cfg, job)
    return job


def test_tiny_job_writes_the_contract_artifacts(learning_job: Path) -> None:
    metrics = json.loads((learning_job / "metrics.json").read_text())
    assert CONTRACT <= metrics.keys()
    assert JobResult.from_dict(metrics).to_dict() == metrics  # every field it wrote is declared in result.py
    assert metrics["status"] == "completed" and metrics["stop_reason"] == "max_epochs"
    assert (metrics["model"], metrics["pattern"], metrics["scheduler"]) == ("tiny", "full", "cosine")
    assert metrics["lr"] == 3e-3
    assert metrics["epochs_run"] == 2
    assert 0 < metrics["trainable_params"] == metrics["total_params"]
    assert metrics["wall_s"] > 0 and metrics["train_samples_per_s"] > 0
    assert math.isfinite(metrics["best_val_loss"]) and math.isfinite(metrics["zero_shot_val_loss"])

    history = pd.read_csv(learning_job / "training_history.csv")
    assert list(history.columns) == ["epoch", "step", "train_loss", "val_loss", "lr"]
    assert (history.epoch[0], history.step[0]) == (-1, 0)  # the zero-shot check comes first
    assert history.val_loss[0] == pytest.approx(metrics["zero_shot_val_loss"])
    assert list(history.step) == [0, 5, 10, 15, 20]
    assert history.val_loss.min() == pytest.approx(metrics["best_val_loss"])
    best_row = history.loc[history.val_loss.idxmin()]
    assert (best_row.step, best_row.epoch) == (metrics["best_step"], metrics["best_epoch"])
    assert (history.train_loss[1:] > 0).all()

    best = learning_job / "checkpoints" / "best"
    assert (best / "config.json").is_file() and (best / "model.safetensors").is_file()
    assert (learning_job / "checkpoints" / "last.ckpt").is_file()
    assert (learning_job / "logs" / "metrics.csv").is_file()  # Lightning's CSV log
    assert list((learning_job / "logs").glob("events.out.tfevents.*"))  # and TensorBoard's


def test_loss_falls_on_an_easy_signal(learning_job: Path) -> None:
    metrics = json.loads((learning_job / "metrics.json").read_text())
    history = pd.read_csv(learning_job / "training_history.csv")
    assert metrics["finetune_helped"] is True
    assert metrics["best_val_loss"] < metrics["zero_shot_val_loss"] * 0.95
    assert history.train_loss.iloc[-1] < history.train_loss.iloc[1]


def test_early_stopping_stops_and_restores_the_best_weights(tmp_path: Path) -> None:
    # a check every step, patience 2 and an lr far too high: validation soon stops improving
    cfg = compose_cfg(["epochs=3", "steps_per_epoch=20", "val_check_interval=1", "patience=2", "lr=0.05",
                       "val_max_windows=32"])
    metrics = run(cfg, tmp_path)
    assert metrics["status"] == "completed"
    assert metrics["stop_reason"] == "early_stopping"
    history = pd.read_csv(tmp_path / "training_history.csv")
    assert metrics["steps_run"] < 60
    # stopped exactly `patience` checks after the best one
    best_idx = int(history.val_loss.idxmin())
    assert len(history) - 1 - best_idx == 2
    assert metrics["best_step"] == history.step[best_idx]
    # the selected weights on disk are those of the best check, not the last step's
    best = load_file(str(tmp_path / "checkpoints" / "best" / "model.safetensors"))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert any(not torch.equal(best[k], last["module." + k]) for k in best)


def test_smoothing_and_min_delta_make_stopping_more_patient(tmp_path: Path) -> None:
    common = ["epochs=3", "steps_per_epoch=20", "val_check_interval=1", "patience=2", "lr=0.05",
              "val_max_windows=32"]
    raw = run(compose_cfg(common), tmp_path / "raw")
    smooth = run(compose_cfg(common + ["smoothing=3"]), tmp_path / "smooth")
    assert raw["stop_reason"] == "early_stopping"
    assert smooth["steps_run"] >= raw["steps_run"]
    strict = run(compose_cfg(common + ["min_delta=1e6"]), tmp_path / "strict")
    # nothing beats the zero-shot check by 1e6: stop after `patience` checks, keep the starting model
    assert strict["steps_run"] == 2 and strict["finetune_helped"] is False and strict["best_step"] == 0


def test_zero_training_steps_give_identical_test_metrics(tmp_path: Path) -> None:
    # epochs=0 is the zero-shot baseline job: validated and tested, never trained
    metrics = run(compose_cfg(["epochs=0", "warmup_steps=100"]), tmp_path)
    assert metrics["status"] == "completed" and metrics["stop_reason"] == "no_training"
    assert metrics["steps_run"] == 0 and metrics["finetune_helped"] is False
    assert metrics["best_val_loss"] == metrics["zero_shot_val_loss"]
    assert metrics["test"] == metrics["zero_shot_test"]
    assert set(metrics["rel_improvement"]) == set(metrics["test"]) - {"coverage_80"}  # coverage is no loss
    assert all(v == 0 for v in metrics["rel_improvement"].values())
    history = pd.read_csv(tmp_path / "training_history.csv")
    assert list(history.epoch) == [-1]
