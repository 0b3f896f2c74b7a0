"""Sweeps beyond one process: hydra/launcher=local runs every job in its own submitit process (and
analyze.py reads the sweep as any other), and hydra/launcher=slurm composes into the sbatch script that
submitit submits, checked without a cluster."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONF, ROOT, TINY, run_train

TOKEN_EVAL = ["eval.num_samples=2", "eval.max_windows=8", "eval.plot_windows=0"]
# submitit's job processes unpickle the task, which imports moirai_ft: found as an installed package
# would be (the README installs with `pip install -e .`), whatever this environment has installed
PACKAGE_ON_PATH = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # two jobs at once on a 2-core machine: one core each, not two threads each


def _job_dirs(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in sweep.glob("*/metrics.json"))


@pytest.mark.slow  # a sweep whose jobs are processes of their own
def test_local_launcher_runs_each_job_in_its_own_submitit_process(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_train(
        ["-m", "hydra/launcher=local", *TINY, *TOKEN_EVAL, "lr=1e-3,3e-3", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=PACKAGE_ON_PATH | ONE_THREAD,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]

    jobs = _job_dirs(sweep)
    assert len(jobs) == 2
    metrics = [json.loads((j / "metrics.json").read_text()) for j in jobs]
    assert all(m["status"] == "completed" for m in metrics), metrics
    assert sorted(m["lr"] for m in metrics) == [1e-3, 3e-3]

    # submitit's own evidence, inside the sweep directory: one folder per job, named by its job id (the
    # job's process), holding that process's logs and its pickled result
    submitit = {p.name: p for p in (sweep / ".submitit").iterdir() if p.name.isdigit()}
    assert len(submitit) == 2
    for job_id, folder in submitit.items():
        assert (folder / f"{job_id}_0_result.pkl").is_file()
        assert f"job_id={job_id}" in (folder / f"{job_id}_0_log.out").read_text()  # submitit's JobEnvironment
    # and Hydra recorded each job under the submitit job id that ran it
    recorded = {str(OmegaConf.load(j / ".hydra" / "hydra.yaml").hydra.job.id) for j in jobs}
    assert recorded == set(submitit)
    assert str(os.getpid()) not in recorded

    # analyze.py reads the sweep as it reads any other
    analysis = subprocess.run(
        [sys.executable, str(ROOT / "analyze.py"), str(sweep)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert analysis.returncode == 0, analysis.stderr[-3000:]
    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(float(r["lr"]) for r in rows) == [1e-3, 3e-3]
    assert {r["state"] for r in rows} == {"completed"}


RESOURCES = ("gpus_per_node", "cpus_per_gpu", "mem_per_gpu", "cpus_per_task", "mem_gb")


def _launcher(overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=False) | {
        k: cfg.hydra.launcher.get(k) for k in RESOURCES  # resolved against the job config
    }


def test_presets_take_the_gpu_count_from_the_hardware_group() -> None:
    assert _launcher(["hydra/launcher=slurm"])["gpus_per_node"] == 1
    assert _launcher(["hydra/launcher=slurm", "hardware=ddp", "hardware.devices=4"])["gpus_per_node"] == 4
    local = _launcher(["hydra/launcher=local"])
    assert local["gpus_per_node"] == 1  # every job of the sweep on GPU 0, shared
    for preset in ("slurm", "local"):
        launcher = _launcher([f"hydra/launcher={preset}"])
        assert launcher["tasks_per_node"] == 1  # a ddp job starts its own ranks
        assert launcher["submitit_folder"].startswith("${hydra.sweep.dir}/")  # job logs inside the sweep


@pytest.mark.parametrize("hardware", ["auto", "gpu", "ddp", "cpu"])
def test_the_slurm_preset_asks_for_gpus_only_when_the_hardware_uses_them(hardware: str) -> None:
    asked = {k: v for k, v in _launcher(["hydra/launcher=slurm", f"hardware={hardware}"]).items()
             if k in RESOURCES and v is not None}
    if hardware == "cpu":  # CPUs and memory per task; a CPU partition refuses any GPU request
        assert set(asked) == {"cpus_per_task", "mem_gb"} and asked["cpus_per_task"] >= 1 and asked["mem_gb"] >= 1
    else:  # GPUs, and CPUs and memory per GPU
        assert set(asked) == {"gpus_per_node", "cpus_per_gpu", "mem_per_gpu"}
        assert asked["gpus_per_node"] == (2 if hardware == "ddp" else 1)


@pytest.mark.parametrize("said, hardware, names", [
    ("sbatch: error: Batch job submission failed: Invalid generic resource (gres) specification", "gpu",
     ["Invalid generic resource (gres) specification", "hardware=gpu", "hardware=cpu", "hydra.launcher.gpus_per_node"]),
    ("sbatch: error: invalid partition specified: big\nsbatch: error: Batch job submission failed: Invalid partition "
     "name specified", "cpu", ["invalid partition specified: big", "hydra.launcher.partition"]),
    ("sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified",
     "cpu", ["hydra.launcher.account"]),
    ("sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or exceeds some limit)",
     "cpu", ["hydra.launcher.timeout_min"]),
    ("sbatch: error: Batch job submission failed: Requested node configuration is not available", "cpu",
     ["cpus_per_task=2", "hydra.launcher.cpus_per_task", "hydra.launcher.mem_gb"]),
    ("sbatch: error: Batch job submission failed: Something new", "cpu", ["Something new", "hydra.launcher.*"]),
])
def test_an_sbatch_refusal_names_the_setting_that_changes_it(said: str, hardware: str, names: list[str]) -> None:
    from hydra_plugins.moirai_slurm_launcher.launcher import submission_error

    params = _launcher(["hydra/launcher=slurm", f"hardware={hardware}"])
    message = submission_error(said, hardware, hardware != "cpu", params)
    assert "\n" not in message
    for name in names:
        assert name in message, message


def test_slurm_preset_builds_the_sbatch_script_submitit_would_submit(tmp_path: Path) -> None:
    # stand-ins for the cluster's commands: submitit checks that srun exists, then calls sbatch with the
    # script it wrote; this sbatch keeps a copy and refuses, so nothing waits for a queue
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").write_text('#!/bin/sh\ncp "$1" "$SBATCH_CAPTURE"\necho "sbatch: error: no cluster (test)" >&2\nexit 1\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    captured, sweep = tmp_path / "submitted.sh", tmp_path / "sweep"

    proc = run_train(
        ["-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu-test", "hydra.launcher.account=lab42",
         "hydra.launcher.timeout_min=90", "hydra.launcher.array_parallelism=3",
         "hardware=ddp", "hardware.devices=4", "lr=1e-3,3e-3,1e-2", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SBATCH_CAPTURE": str(captured)},
    )
    assert proc.returncode != 0 and "no cluster (test)" in proc.stdout + proc.stderr  # our sbatch was called
    script = captured.read_text()
    lines = set(script.splitlines())
    for expected in (
        "#SBATCH --partition=gpu-test",
        "#SBATCH --account=lab42",
        "#SBATCH --gpus-per-node=4",  # hardware.devices: one job on 4 GPUs
        "#SBATCH --ntasks-per-node=1",  # its ranks are started by the job
        "#SBATCH --cpus-per-gpu=4",
        "#SBATCH --mem-per-gpu=32G",
        "#SBATCH --time=90",
        "#SBATCH --array=0-2%3",  # three sweep jobs, at most three at once
        f"#SBATCH --output={sweep}/.submitit/%A_%a/%A_%a_0_log.out",  # job logs inside the sweep directory
    ):
        assert expected in lines, f"{expected!r} not in:\n{script}"
    assert f"-m submitit.core._submit {sweep}/.submitit/%j" in script
