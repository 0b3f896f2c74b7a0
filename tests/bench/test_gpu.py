"""On a CUDA device only (`pytest -m gpu`; bench/device_check.sh runs them on the GPU machine): what the CPU
suite can only approximate. Skipped where no CUDA device is present."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import compose_cfg

from moirai_ft.instrument.host_sync import CountStepSyncs
from moirai_ft.train.job import run_job

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_a_bf16_gpu_step_makes_the_host_wait_zero_times(tmp_path):
    """tests/model/test_host_sync.py counts on the CPU; here torch's own CUDA sync detector also watches the step,
    and sees the blocking device-to-host copies a CPU count cannot."""
    cfg = compose_cfg(["hardware=gpu", "steps_per_epoch=8"])
    counter = CountStepSyncs(first=3, steps=3)  # past the optimizer's first step and the allocator's growth
    metrics = run_job(cfg, tmp_path, {"syncs": counter})
    assert metrics["status"] == "completed" and metrics["steps_run"] == 8
    assert counter.done and counter.counter.calls > 1000
    assert counter.per_step == 0, dict(counter.counter.ops)
    assert counter.cuda_syncs == 0


def test_the_zero_shot_validation_loss_is_the_same_on_the_gpu_as_on_the_cpu(tmp_path, monkeypatch):
    """The same random model on the same evenly spaced validation windows, in fp32 with TF32 off: the
    device-resident data and batched validation compute what the CPU computes, to float rounding."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    losses = {}
    for hardware in ("cpu", "gpu"):
        cfg = compose_cfg([f"hardware={hardware}", "hardware.precision=32-true", "steps_per_epoch=2"])
        metrics = run_job(cfg, tmp_path / hardware)
        assert metrics["status"] == "completed"
        losses[hardware] = metrics["zero_shot_val_loss"]
    assert math.isfinite(losses["gpu"])
    assert losses["gpu"] == pytest.approx(losses["cpu"], rel=1e-4)
