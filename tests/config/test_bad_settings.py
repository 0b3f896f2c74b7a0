"""Settings that would waste a run: a GPU asked for where there is none (one line, exit 2, before any data
loads), and a validation interval that leaves the last training steps unchecked (the job validates them
at the end, and analyze never recommends the same interval again)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from conftest import TINY, compose_cfg, run_train
from moirai_ft.analysis.diagnose import Rule, diagnose
from moirai_ft.artifacts import HISTORY
from moirai_ft.config.schema import validate
from moirai_ft.errors import UserError
from moirai_ft.train.job import run


def test_gpu_without_cuda_is_one_line_before_the_data(tmp_path: Path) -> None:
    # data.path points nowhere: had the data been read first, the message would be about it
    proc = run_train(TINY + ["hardware=gpu", "data=csv", f"data.path={tmp_path / 'none.csv'}"], cwd=tmp_path,
                     env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "hardware=auto" in errors[0] and "hardware=cpu" in errors[0] and "data.path" not in errors[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("hardware", [["hardware=gpu"], ["hardware=ddp"], ["hardware=cpu", "hardware.accelerator=cuda"]])
def test_every_cuda_accelerator_is_checked(hardware: list[str]) -> None:
    with pytest.raises(UserError) as err:
        validate(compose_cfg(hardware))
    assert "hardware=cpu" in str(err.value) and "\n" not in str(err.value)


def _history(job_dir: Path) -> list[dict[str, str]]:
    with (job_dir / HISTORY).open() as f:
        return list(csv.DictReader(f))


# TINY runs 6 steps: an interval of 100 never fires, 0.7 of an epoch fires at step 4 only
@pytest.mark.parametrize("interval", ["100", "0.7"])
def test_last_training_steps_are_always_validated(interval: str, tmp_path: Path) -> None:
    metrics = run(compose_cfg([f"val_check_interval={interval}", "eval.num_samples=4", "eval.max_windows=8",
                               "eval.plot_windows=0"]), tmp_path / "job")
    assert metrics["status"] == "completed" and metrics["steps_run"] > 0, metrics
    rows = _history(tmp_path / "job")
    assert rows[0]["step"] == "0" and int(rows[-1]["step"]) == metrics["steps_run"]  # the trained weights checked
    assert len({r["step"] for r in rows}) == len(rows)  # no step checked twice


@pytest.mark.parametrize("interval,steps", [(100, 6), (7, 6), (1000, 999)])
def test_analyze_never_recommends_an_interval_that_cannot_fire(interval: int, steps: int) -> None:
    config = {"lr": 1e-3, "val_check_interval": interval, "epochs": 1, "warmup_steps": 0, "patience": 3,
              "pattern": {"name": "head_only"}}
    metrics = {"status": "completed", "steps_run": steps, "epochs_run": 1.0, "finetune_helped": False,
               "stop_reason": "max_epochs", "best_epoch": -1}
    findings = diagnose([1.0, 1.0], metrics, config)  # flat: zero-shot and one check alike
    assert findings[0].rule == Rule.unchecked
    alternatives = [alt for f in findings for alt in f.alternatives]
    assert alternatives and all(int(alt["val_check_interval"]) <= steps for alt in alternatives)
    # an interval that fires leaves the recommendations alone
    config["val_check_interval"] = steps
    assert all(f.rule != Rule.unchecked and "val_check_interval" not in str(f.alternatives)
               for f in diagnose([1.0, 1.0], metrics, config))
