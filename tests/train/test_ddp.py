"""One job on several processes (hardware=ddp): every rank's share of the global batch, the config
errors, and a real two-process (gloo) job on the CPU against the same job on one process."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import TINY, compose_cfg, run_train
from moirai_ft.train.distributed import per_device_batch_size
from moirai_ft.errors import UserError
from moirai_ft.result import TRAINED_FIELDS
from moirai_ft.train.job import run
from moirai_ft.data.windows import IndexBatches

CONTRACT = TRAINED_FIELDS  # every field a trained job writes (moirai_ft/result.py)
DDP_CPU = ["hardware=ddp", "hardware.devices=2", "hardware.accelerator=cpu", "hardware.precision=32-true"]
SHARED = [
    # 53 validation windows: the ranks hold 27 and 26, so a mean of the ranks' means would be off (by ~1e-3 here)
    "val_max_windows=53",
    # a check every 2 steps; none beats the zero-shot loss by 100 nats, so early stopping after 2 checks, at
    # step 4 of 6, on every rank at once (a rank that went on alone would leave the other waiting forever)
    "val_check_interval=2", "patience=2", "min_delta=100",
    "eval.num_samples=2", "eval.max_windows=8", "eval.plot_windows=0",  # a token test evaluation
]


@pytest.mark.parametrize(
    "num_windows, global_batch, world, steps",
    [
        (101, 16, 2, 20),  # wraps around through several permutations
        (100, 12, 4, None),  # one full epoch
        (35, 34, 2, None),  # 17 windows a rank: one batch each
        (33, 34, 2, 3),  # 16 a rank after the uneven tail is left out: no batch on either rank, and len() 0
    ],
)
def test_ranks_together_take_the_one_device_batch(num_windows: int, global_batch: int, world: int, steps: int | None) -> None:
    per_device = per_device_batch_size(global_batch, world)
    def batches(s: IndexBatches) -> list[torch.Tensor]:
        return [s.batch(epoch=0, step=i) for i in range(len(s))]

    one = batches(IndexBatches(num_windows, global_batch, shuffle=True, seed=3, steps_per_epoch=steps))
    samplers = [
        IndexBatches(num_windows, per_device, shuffle=True, seed=3, steps_per_epoch=steps, rank=r, world_size=world)
        for r in range(world)
    ]
    ranks = [batches(s) for s in samplers]
    # the same number of steps on every rank, as len() promises Lightning
    assert [len(r) for r in ranks] == [len(s) for s in samplers] == [len(samplers[0])] * world
    assert len(ranks[0]) == len(one)
    for step, batch in enumerate(one):
        shares = [r[step] for r in ranks]
        assert all(len(s) == per_device for s in shares)
        together = torch.cat(shares)
        assert len(together.unique()) == global_batch  # disjoint shares
        assert torch.equal(together.sort().values, batch.sort().values)


def test_global_batch_must_split_evenly() -> None:
    assert per_device_batch_size(64, 4) == 16
    with pytest.raises(UserError, match="multiple of 4"):
        per_device_batch_size(30, 4)


@pytest.mark.parametrize(
    "overrides, env, needle",
    [
        (DDP_CPU + ["hardware.devices=3"], {}, "multiple of 3"),  # batch_size=16 over 3 devices
        (DDP_CPU + ["hardware.devices=auto"], {}, "hardware.devices must be a number"),
        (DDP_CPU + ["hardware.strategy=ddp_spawn"], {}, "hardware.strategy=ddp_spawn"),
        (DDP_CPU, {"SLURM_NTASKS": "2", "SLURM_JOB_NAME": "train"}, "run one task per job"),
    ],
)
def test_multi_device_config_errors_are_one_line_before_any_process_starts(
    overrides: list[str], env: dict[str, str], needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    metrics = run(compose_cfg(overrides), tmp_path)
    assert (metrics["status"], metrics["error_type"]) == ("failed", "config")
    assert needle in metrics["error"] and "\n" not in metrics["error"]
    assert json.loads((tmp_path / "metrics.json").read_text())["error"] == metrics["error"]


@pytest.mark.slow  # a job in one process and the same job in two
def test_ddp_job_on_two_cpu_processes_matches_one_process(tmp_path: Path) -> None:
    single_dir, ddp_dir = tmp_path / "single", tmp_path / "ddp"
    single = run(compose_cfg(SHARED), single_dir)
    proc = run_train([*TINY, *SHARED, *DDP_CPU, f"hydra.run.dir={ddp_dir}"], cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in output  # Lightning: the second process joined the group

    # one set of artifacts, with the contract's fields
    assert sorted(tmp_path.rglob("metrics.json")) == sorted([single_dir / "metrics.json", ddp_dir / "metrics.json"])
    assert len(list(ddp_dir.rglob("training_history.csv"))) == 1
    metrics = json.loads((ddp_dir / "metrics.json").read_text())
    assert CONTRACT <= metrics.keys()
    assert (metrics["status"], metrics["world_size"], metrics["batch_size"]) == ("completed", 2, 16)
    assert (ddp_dir / "checkpoints" / "best" / "model.safetensors").is_file()
    assert (ddp_dir / "logs" / "metrics.csv").is_file()
    assert not list(ddp_dir.rglob("*ddp_process*"))  # no logs of Lightning's own per-rank launcher
    # TensorBoard names its files after the writing process: one process wrote them all
    writers = {re.sub(r"\.\d+$", "", p.name).rsplit(".", 1)[-1] for p in (ddp_dir / "logs").glob("events.out.tfevents.*")}
    assert len(writers) == 1

    # the same job: exact validation reduction, same decisions, same trajectory
    assert single["status"] == "completed" and single["world_size"] == 1
    for key in ("stop_reason", "steps_run", "best_step", "best_epoch", "finetune_helped"):
        assert metrics[key] == single[key], key
    assert metrics["stop_reason"] == "early_stopping" and metrics["steps_run"] == 4
    assert metrics["zero_shot_val_loss"] == pytest.approx(single["zero_shot_val_loss"], rel=1e-5)
    ddp_history = pd.read_csv(ddp_dir / "training_history.csv")
    one_history = pd.read_csv(single_dir / "training_history.csv")
    assert list(ddp_history.step) == list(one_history.step) == [0, 2, 4]
    # trained checks: the global batch of 16 is 2 x 8 on two ranks, the same windows and the same mean gradient
    assert ddp_history.val_loss.tolist() == pytest.approx(one_history.val_loss.tolist(), rel=1e-4)
    assert ddp_history.train_loss[1:].tolist() == pytest.approx(one_history.train_loss[1:].tolist(), rel=1e-4)
