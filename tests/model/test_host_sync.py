"""A training step of moirai-ft's path makes the host wait for the device zero times.

On a GPU each host synchronisation drains the launch queue; uni2ts's path issues dozens per step. They are
counted here on the CPU with a TorchDispatchMode (moirai_ft/instrument/host_sync.py), over whole iterations of the
real job's training loop, so a new `.item()`, `if tensor:` or boolean-mask index in the step fails the suite.

Allowance: 0 per step. Reads that remain are periodic and outside the counted steps: one per progress-bar
refresh and one per logged step (hardware.progress_bar_refresh and hardware.log_every_n_steps, 50 on the
GPU profile), one per DivergenceGuard check (every 10 steps) and the validation checks.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import compose_cfg
from uni2ts.loss.packed import PackedNLLLoss

from moirai_ft.data.prepare import prepare
from moirai_ft.model.fast_path import distribution_validation, use_fast_path
from moirai_ft.model.families.moirai1 import LOSS_FIELDS, MODEL_FIELDS
from moirai_ft.instrument.host_sync import CountStepSyncs, HostSyncCounter
from moirai_ft.train.job import run_job
from moirai_ft.model.load import random_module

SYNCS_ALLOWED_PER_STEP = 0

# the GPU hardware profile (its logging and progress-bar cadence) run on the CPU, in fp32
GPU_PROFILE_ON_CPU = ["hardware=gpu", "hardware.accelerator=cpu", "hardware.precision=32-true"]


def test_a_training_step_of_the_job_issues_no_host_sync(tmp_path):
    cfg = compose_cfg([*GPU_PROFILE_ON_CPU, "steps_per_epoch=5"])
    counter = CountStepSyncs(first=2, steps=2)  # iterations 2 and 3: past the optimizer's first step
    metrics = run_job(cfg, tmp_path, {"syncs": counter})
    assert metrics["status"] == "completed" and metrics["steps_run"] == 5
    assert counter.done and counter.counter.calls > 1000  # the window did hold two real training steps
    assert counter.per_step <= SYNCS_ALLOWED_PER_STEP, dict(counter.counter.ops)


def _loss_syncs(module: torch.nn.Module, batch: dict[str, torch.Tensor], validate: bool) -> int:
    """Host syncs of one forward + loss + backward through `module`."""
    with distribution_validation(validate), HostSyncCounter() as counter:
        pred = module(**{k: batch[k] for k in MODEL_FIELDS})
        PackedNLLLoss()(pred=pred, **{k: batch[k] for k in LOSS_FIELDS}).backward()
    return counter.total


@pytest.fixture(scope="module")
def tiny_batch():
    cfg = compose_cfg()
    torch.manual_seed(0)
    return cfg, prepare(cfg).train.batch(torch.arange(cfg.batch_size))


def test_the_counter_sees_each_sync_uni2ts_issues_and_each_fix_removes_its_share(tiny_batch):
    cfg, batch = tiny_batch
    torch.manual_seed(0)
    module = random_module(cfg.model)
    as_uni2ts = _loss_syncs(module, batch, validate=True)
    no_validation = _loss_syncs(module, batch, validate=False)
    fast = _loss_syncs(use_fast_path(copy.deepcopy(module)), batch, validate=False)
    # distribution checks, then the rotary cache check and the scaler's mask assignment
    assert as_uni2ts > no_validation > fast == 0
    # the rotary projection checks once per attention call: two per layer
    assert no_validation >= 2 * cfg.model.num_layers
