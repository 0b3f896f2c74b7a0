"""Nothing lost: configuration mistakes, runtime faults, kills and determinism (issue #8).

Each case fails if the behaviour regresses: a clear one-line message and a non-zero exit for an error,
nothing that looks like a result, and a resumable, reproducible job otherwise.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import TINY, compose_cfg, run_train
from moirai_ft.artifacts import read_metrics, write_json_atomic
from moirai_ft.train.job import run
from moirai_ft.model.load import random_module

VOLATILE = {"wall_s", "train_samples_per_s"}  # timings: the only fields allowed to differ between runs


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_no_result(job_dir: Path) -> None:
    assert not (job_dir / "training_history.csv").exists()
    assert not (job_dir / "checkpoints").exists()
    metrics = read_metrics(job_dir)
    assert metrics is None or (metrics["status"] == "failed" and metrics.get("best_val_loss") is None)


# --- configuration mistakes: each stops before any data, weights or training, in one line ----------------

@pytest.mark.parametrize(
    "overrides,fragment",
    [
        (["lr=0"], "lr must be > 0"),
        (["lr=-1e-5"], "lr must be > 0"),
        (["warmup_steps=1000"], "warmup_steps=1000 is longer than the whole run"),
        (["patience=0"], "patience must be >= 1"),
        (["batch_size=0"], "batch_size must be >= 1"),
        (["context_length=0"], "context_length must be a positive"),
        (["context_length=-64"], "context_length must be a positive"),
    ],
)
def test_config_mistake_is_one_line_and_no_result(tmp_path: Path, overrides: list[str], fragment: str) -> None:
    metrics = run(compose_cfg(overrides), tmp_path)
    assert metrics["status"] == "failed" and metrics["error_type"] == "config"
    assert fragment in metrics["error"] and "\n" not in metrics["error"]
    assert_no_result(tmp_path)


def test_config_mistake_through_train_py_exits_2_with_one_line(tmp_path: Path) -> None:
    r = run_train([*TINY, "warmup_steps=1000", f"hydra.run.dir={tmp_path / 'job'}"], cwd=tmp_path)
    assert r.returncode == 2
    assert len(error_lines(r.stderr)) == 1 and "lower warmup_steps" in error_lines(r.stderr)[0]
    assert "Traceback" not in r.stderr
    assert_no_result(tmp_path / "job")


def test_unknown_group_option_through_train_py(tmp_path: Path) -> None:
    r = run_train(["scheduler=onecycle", f"hydra.run.dir={tmp_path / 'job'}"], cwd=tmp_path)
    assert r.returncode == 2
    assert error_lines(r.stderr) == ["error: unknown scheduler 'onecycle'; choose one of: constant, cosine, linear"]
    assert not (tmp_path / "job").exists()


def test_a_directory_holding_another_configs_job_is_refused_and_that_job_kept(tmp_path: Path) -> None:
    job = tmp_path / "job"
    first = run_train([*TINY, "epochs=0", f"hydra.run.dir={job}"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    before = read_metrics(job)
    r = run_train([*TINY, "epochs=0", "seed=7", f"hydra.run.dir={job}"], cwd=tmp_path)
    assert r.returncode == 2
    assert error_lines(r.stderr) == [f"error: {job} already holds a job with another config; "
                                     "give this run its own hydra.run.dir"], r.stderr[-2000:]
    assert read_metrics(job) == before  # the refusal left the other job's result whole


def test_checkpoint_dir_that_is_not_moirai(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    metrics = run(compose_cfg(["model.init=pretrained", f"model.checkpoint={ckpt}"]), tmp_path / "job")
    assert metrics["status"] == "failed" and metrics["error_type"] == "config"
    assert "is not a Moirai checkpoint" in metrics["error"]
    assert_no_result(tmp_path / "job")


def test_corrupted_safetensors(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    random_module(compose_cfg().model).save_pretrained(ckpt)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a download cut short
    r = run_train([*TINY, "model.init=pretrained", f"model.checkpoint={ckpt}", f"hydra.run.dir={tmp_path / 'job'}"],
                  cwd=tmp_path)
    assert r.returncode == 2
    (line,) = error_lines(r.stderr)
    assert "could not be loaded" in line and "re-download or re-save it" in line
    assert_no_result(tmp_path / "job")


# --- the output directory ---------------------------------------------------------------------------------

def test_unwritable_output_directory_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    r = run_train([*TINY, f"hydra.run.dir={blocker / 'job'}"], cwd=tmp_path)
    assert r.returncode == 2
    assert error_lines(r.stderr) == [
        f"error: cannot write to the output directory {blocker / 'job'} (Not a directory); pass a writable hydra.run.dir=<dir>"
    ]
    assert "Traceback" not in r.stderr


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 400 KB filesystem: room for the config and logs, not for a checkpoint (needs root to mount)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_disk_full_during_the_job_is_reported(tiny_disk: Path, tmp_path: Path) -> None:
    r = run_train([*TINY, f"hydra.run.dir={tiny_disk / 'job'}"], cwd=tmp_path)
    assert r.returncode != 0
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and "No space left on device" in lines[0]
    assert "Traceback" not in r.stderr
    metrics = read_metrics(tiny_disk / "job")
    assert metrics is None or metrics["status"] == "failed"


# --- metrics.json is never half-written ----------------------------------------------------------------------

def test_a_write_cut_short_leaves_the_previous_metrics_whole(tmp_path: Path, monkeypatch) -> None:
    write_json_atomic(tmp_path / "metrics.json", {"status": "completed", "best_val_loss": 1.0})

    def dies_mid_write(obj, f, **kwargs):  # the process dies after writing part of the new file
        f.write('{"status": "compl')
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(tmp_path / "metrics.json", {"status": "failed"})
    monkeypatch.undo()
    assert read_metrics(tmp_path) == {"status": "completed", "best_val_loss": 1.0}


def test_killed_while_writing_metrics_never_leaves_a_partial_file(tmp_path: Path) -> None:
    """A real process writing metrics.json in a loop, killed with SIGKILL at an arbitrary moment."""
    script = (
        "import sys; from pathlib import Path; from moirai_ft.artifacts import write_json_atomic\n"
        "big = {'status': 'completed', 'history': list(range(200000))}\n"
        "print('ready', flush=True)\n"
        "while True: write_json_atomic(Path(sys.argv[1]) / 'metrics.json', big)\n"
    )
    for delay in (0.05, 0.2, 0.5):
        p = subprocess.Popen([os.sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        try:
            p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            p.kill()
        p.wait()
        metrics = read_metrics(tmp_path)
        assert metrics is None or (metrics["status"] == "completed" and len(metrics["history"]) == 200000)


# --- determinism -----------------------------------------------------------------------------------------------

def comparable(metrics: dict) -> dict:
    """Every field but timings, at any depth."""
    return {k: comparable(v) if isinstance(v, dict) else v for k, v in metrics.items() if k not in VOLATILE}


def test_same_config_and_seed_give_the_same_metrics(tmp_path: Path) -> None:
    cfg = ["steps_per_epoch=8", "val_check_interval=4"]
    a = run(compose_cfg(cfg), tmp_path / "a")
    b = run(compose_cfg(cfg), tmp_path / "b")
    assert a["status"] == "completed"
    assert comparable(a) == comparable(b)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / "training_history.csv"),
                                  pd.read_csv(tmp_path / "b" / "training_history.csv"))
    c = run(compose_cfg(cfg + ["seed=1"]), tmp_path / "c")
    assert c["best_val_loss"] != a["best_val_loss"]  # the seed matters: the comparison above can fail


# --- divergence --------------------------------------------------------------------------------------------------

def test_nan_loss_is_diverged_and_keeps_the_last_good_weights(tmp_path: Path) -> None:
    metrics = run(compose_cfg(["lr=1e30", "steps_per_epoch=8", "val_check_interval=1", "patience=100"]), tmp_path)
    assert metrics["status"] == "diverged" and metrics["stop_reason"] == "diverged"
    assert "NaN" in metrics["error"]
    assert math.isfinite(metrics["best_val_loss"])
    from safetensors.torch import load_file

    best = load_file(str(tmp_path / "checkpoints" / "best" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in best.values())


# --- out of GPU memory --------------------------------------------------------------------------------------------

def test_oom_retries_with_half_the_micro_batch_and_the_same_effective_batch(tmp_path: Path) -> None:
    from moirai_ft.instrument.faults import InjectFaults

    cfg = ["steps_per_epoch=6", "val_check_interval=3"]
    clean = run(compose_cfg(cfg), tmp_path / "clean")
    oom = {"faults": InjectFaults(oom_above=8)}  # TINY's batch of 16 "does not fit"; 8 does
    retried = run(compose_cfg(cfg), tmp_path / "oom", oom)
    assert retried["status"] == "completed"
    assert retried["oom_micro_batches"] == [16] and retried["accumulate_grad_batches"] == 2
    assert clean["accumulate_grad_batches"] == 1 and clean["oom_micro_batches"] == []
    # two micro-batches of 8 are the batch of 16: same steps, same schedule, same losses up to float rounding
    assert retried["steps_run"] == clean["steps_run"]
    assert retried["best_val_loss"] == pytest.approx(clean["best_val_loss"], rel=1e-5)
    a = pd.read_csv(tmp_path / "clean" / "training_history.csv")
    b = pd.read_csv(tmp_path / "oom" / "training_history.csv")
    assert list(a.step) == list(b.step)
    assert b.val_loss.to_numpy() == pytest.approx(a.val_loss.to_numpy(), rel=1e-5)


def test_oom_after_some_steps_restarts_lora_from_its_first_adapters(tmp_path: Path) -> None:
    """Steps taken before running out of memory change LoRA's A and B; the retry must start from the same
    adapters as the first attempt (zeroing B alone kept A's trained values), so it ends as a clean run."""
    from moirai_ft.instrument.faults import InjectFaults

    cfg = ["pattern=lora", "pattern.dropout=0", "steps_per_epoch=6", "val_check_interval=3"]
    run(compose_cfg(cfg), tmp_path / "clean")
    retried = run(compose_cfg(cfg), tmp_path / "oom", {"faults": InjectFaults(oom_after_steps=3)})
    assert retried["status"] == "completed" and retried["oom_micro_batches"] == [16]
    a = pd.read_csv(tmp_path / "clean" / "training_history.csv")
    b = pd.read_csv(tmp_path / "oom" / "training_history.csv")
    assert list(a.step) == list(b.step)
    assert b.val_loss.to_numpy() == pytest.approx(a.val_loss.to_numpy(), rel=1e-5)


def test_oom_below_the_floor_fails_with_a_clear_error(tmp_path: Path) -> None:
    from moirai_ft.instrument.faults import InjectFaults

    nothing_fits = {"faults": InjectFaults(oom_above=1)}
    metrics = run(compose_cfg(["oom_min_batch_size=4"]), tmp_path, nothing_fits)
    assert metrics["status"] == "failed"
    assert "out of GPU memory at a micro-batch of 4 windows" in metrics["error"]
    assert "smaller model" in metrics["error"]


def test_an_interrupted_fit_clears_its_progress_bar(tmp_path: Path) -> None:
    """The out-of-memory retry starts a second fit: the first one's bar must not linger."""
    import lightning as L
    from torch.utils.data import DataLoader

    from moirai_ft.train.progress import SparseProgressBar

    class FailsAtStep3(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            if batch_idx == 3:
                raise torch.cuda.OutOfMemoryError("injected")
            return (self.w * batch).sum()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    bar = SparseProgressBar(refresh_rate=1)
    trainer = L.Trainer(max_steps=10, callbacks=[bar], logger=False, enable_checkpointing=False,
                        default_root_dir=tmp_path, accelerator="cpu", enable_model_summary=False)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        trainer.fit(FailsAtStep3(), DataLoader(torch.ones(8, 1)))
    assert bar._train_progress_bar is not None and bar._train_progress_bar.disable  # closed
    assert not bar._train_progress_bar.leave  # and its line cleared


# --- killed during training: the same command resumes and ends where a clean run ends ------------------------------

# every step logged, so logs/metrics.csv shows any row lost or repeated across the resume
RESUMABLE = [*TINY, "epochs=2", "steps_per_epoch=8", "val_check_interval=4", "hardware.log_every_n_steps=1"]


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> Path:
    job = tmp_path_factory.mktemp("clean") / "job"
    r = run_train([*RESUMABLE, f"hydra.run.dir={job}"], cwd=job.parent)
    assert r.returncode == 0, r.stderr[-2000:]
    return job


def assert_same_result(job: Path, clean: Path) -> None:
    assert comparable(read_metrics(job)) == comparable(read_metrics(clean))
    for table in ("training_history.csv", "logs/metrics.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(job / table), pd.read_csv(clean / table))
    assert tensorboard_scalars(job) == tensorboard_scalars(clean)


def tensorboard_scalars(job: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) of every scalar TensorBoard shows, over all of the job's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(job / "logs"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    names = lambda d: sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if ".hydra" not in p.parts and "logs" not in p.parts)
    assert names(job) == names(clean)


@pytest.mark.parametrize("kill_at", [6, 9], ids=["mid-epoch", "after-epoch-end"])
def test_sigkill_then_the_same_command_resumes_to_the_clean_result(clean_run: Path, tmp_path: Path, kill_at: int) -> None:
    job = tmp_path / "job"
    args = [*RESUMABLE, f"hydra.run.dir={job}"]
    killed = run_train(args, cwd=tmp_path, env={"MOIRAI_FT_INJECT_KILL_AT_STEP": str(kill_at)})
    assert killed.returncode == -9
    assert (job / "checkpoints" / "last.ckpt").is_file() and read_metrics(job) is None
    resumed = run_train(args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr + resumed.stdout
    assert_same_result(job, clean_run)


def test_sigkill_from_outside_at_any_moment_then_resume(clean_run: Path, tmp_path: Path) -> None:
    job = tmp_path / "job"
    args = [*RESUMABLE, f"hydra.run.dir={job}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    from conftest import ROOT

    p = subprocess.Popen([os.sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (job / "checkpoints" / "last.ckpt").is_file() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    p.kill()
    p.wait()
    resumed = run_train(args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_result(job, clean_run)
