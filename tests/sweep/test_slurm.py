"""hydra/launcher=slurm on a real single-node SLURM cluster (slurmctld, slurmd, munge; tests/services): a sweep is
one job array that completes; scancel, then the same command, loses nothing; a job at its time limit is requeued
by submitit and finishes from its checkpoint; sbatch's refusal is one line. The jobs are tiny, and jobs that
must wait (for scancel, for the time limit) sleep without using a CPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, TINY, run_train
from moirai_ft.instrument.faults import PAUSE_AT_STEP, PAUSE_ONCE
from tests.train.test_reliability import comparable

# every test here on one xdist worker, with the time-limit sweep started first: it spends two minutes waiting
# for SLURM's time limit, and the module's other tests run meanwhile (its test is the last in the file)
pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("time_limit_sweep")]

QUICK = ["eval.num_samples=4", "eval.max_windows=8", "eval.plot_windows=0", "val_check_interval=3"]
# the tests' jobs share the node: one CPU and a little memory each, so two run at once
SMALL_JOBS = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]
PAUSE_AT = 4  # after the checkpoint of the check at step 3: a job paused here resumes from step 3


def cluster_env(cluster=None, **extra: str) -> dict[str, str]:
    # the job processes (submitit's `python -m submitit.core._submit`) import moirai_ft from this checkout
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": path, **(cluster.env if cluster is not None else {}), **extra}


def start_train(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen, timeout: float = 480) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def metrics(job: Path) -> dict | None:
    try:
        return json.loads((job / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def job_dirs(sweep: Path) -> dict[str, Path]:
    return {p.name: p for p in sweep.iterdir() if (p / ".hydra").is_dir()}


def array_ids(sweep: Path) -> set[str]:
    """The SLURM job arrays that ran the sweep's jobs (submitit's folders are named <array>_<task>)."""
    return {p.name.split("_")[0] for p in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name)}


def wait_until(condition, what: str, timeout: float = 300, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"train.py ended ({proc.returncode}) before {what}: {proc.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def test_a_sweep_is_one_job_array_and_scancel_then_the_same_command_loses_nothing(slurm_cluster, tmp_path: Path):
    """Killed: a sweep whose jobs get one CPU each; one job sleeps at step 4 (its step-3 checkpoint written)
    while the other completes, then the whole array is cancelled. Reference: the same jobs never killed, with
    the preset as it is (hardware=cpu and no other launcher setting). The same command again skips the completed
    job, continues the killed one from its checkpoint, and ends with the reference's metrics."""
    jobs = ["-m", "hydra/launcher=slurm", *TINY, *QUICK, "pattern=full,head_only"]
    killed_cmd = [*jobs, *SMALL_JOBS, f"hydra.sweep.dir={tmp_path / 'killed' / 'sweep'}"]
    pause_file = tmp_path / "paused"
    killed = start_train(killed_cmd, tmp_path / "killed",
                         cluster_env(slurm_cluster, **{PAUSE_AT_STEP: str(PAUSE_AT), PAUSE_ONCE: str(pause_file)}))
    sweep = tmp_path / "killed" / "sweep"

    def paused_and_other_done() -> bool:
        if not pause_file.exists():
            return False
        paused = Path(pause_file.read_text())
        others = [j for j in job_dirs(sweep).values() if j != paused]
        # the other job done as submitit sees it (its result file), not only its metrics.json written
        return (paused / "checkpoints" / "last.ckpt").is_file() and len(others) == 1 \
            and (metrics(others[0]) or {}).get("status") == "completed" \
            and any((sweep / ".submitit").glob("*/*_result.pkl"))

    wait_until(paused_and_other_done, "one job paused and the other completed", proc=killed)
    paused = Path(pause_file.read_text())
    (array,) = array_ids(sweep)
    subprocess.run(["scancel", array], env=cluster_env(slurm_cluster), check=True)
    code, out = finish(killed)
    assert code == 1, out[-3000:]  # the sweep says a job has no result, and the run's exit status says so too
    assert "ended without a result" in out and f"missing {paused.name}" in out.lower(), out[-3000:]
    assert metrics(paused) is None  # nothing that looks like a result
    done = next(j for j in job_dirs(sweep).values() if j != paused)
    done_before = (done / "metrics.json").stat().st_mtime_ns

    # the reference (both jobs of one array, each on the preset's resources) and the same command again
    reference = start_train([*jobs, f"hydra.sweep.dir={tmp_path / 'reference' / 'sweep'}"], tmp_path / "reference",
                            cluster_env(slurm_cluster))
    again = start_train(killed_cmd, tmp_path / "killed", cluster_env(slurm_cluster))
    code, out = finish(again)
    assert code == 0, out[-3000:]
    ref_code, ref_out = finish(reference)
    assert ref_code == 0, ref_out[-3000:]

    # one job array per sweep; no sacct noise on a cluster without accounting, said once instead
    assert len(array_ids(tmp_path / "reference" / "sweep")) == 1
    assert "Bypassing sacct error" not in ref_out and ref_out.count("job states come from squeue") == 1
    assert "2 job(s): 2 completed" in ref_out
    assert "#SBATCH --cpus-per-task=2" in ref_sbatch_script(tmp_path / "reference" / "sweep")

    assert (done / "metrics.json").stat().st_mtime_ns == done_before  # the completed job was not retrained
    assert resumed_at(paused) == PAUSE_AT - 1  # the killed one went on from its step-3 checkpoint
    reference_jobs = job_dirs(tmp_path / "reference" / "sweep")
    for job in (done, paused):
        same_result(job, reference_jobs[job.name])


def resumed_at(job: Path) -> int | None:
    """The step the job's log says its fit resumed from (moirai_ft/train/fit.py), None if it never resumed."""
    found = re.findall(r"resuming from \S+ \(step (\d+)\)", "".join(p.read_text() for p in job.glob("*.log")))
    return int(found[-1]) if found else None


def same_result(job: Path, reference: Path) -> None:
    assert metrics(job)["status"] == "completed"
    assert comparable(metrics(job)) == comparable(metrics(reference)), job.name
    pd.testing.assert_frame_equal(pd.read_csv(job / "training_history.csv"), pd.read_csv(reference / "training_history.csv"))


def ref_sbatch_script(sweep: Path) -> str:
    return next((sweep / ".submitit").glob("*/*_submission.sh")).read_text()


@pytest.mark.parametrize("extra, names", [
    # the default preset on a node without GPUs (hardware=auto asks the same: tests/sweep/test_launchers.py)
    (["hardware=gpu"], ["hardware=gpu", "hardware=cpu", "hydra.launcher.gpus_per_node"]),
    (["hardware=cpu", "hydra.launcher.partition=no_such_partition"], ["hydra.launcher.partition"]),
])
def test_sbatch_refusing_the_array_is_one_error_line_naming_the_setting(slurm_cluster, tmp_path: Path, extra, names):
    proc = run_train(["-m", "hydra/launcher=slurm", "model=tiny", *extra, "lr=1e-3,2e-3",
                      f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path, env=cluster_env(slurm_cluster))
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: sbatch refused"), proc.stderr
    for name in names:
        assert name in lines[0], lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def time_limit_sweep(slurm_cluster, tmp_path_factory):
    """A one-job sweep that sleeps at step 4 until SLURM warns it of its time limit (SIGUSR2, signal_delay_s
    before it); submitit requeues it (max_num_timeout=1) and the next attempt continues from
    checkpoints/last.ckpt. timeout_min=2, not 1: slurmctld checks time limits every 30 s and sends the warning
    as much as that early, so with 1 minute it can come before the job has trained a step (seen here: 21 s
    after the start). Started when the module starts; checked by its last test."""
    tmp = tmp_path_factory.mktemp("time_limit")
    sweep = tmp / "sweep"
    env = cluster_env(slurm_cluster, **{PAUSE_AT_STEP: str(PAUSE_AT), PAUSE_ONCE: str(tmp / "paused")})
    proc = start_train(
        ["-m", "hydra/launcher=slurm", *TINY, *QUICK, *SMALL_JOBS, "lr=1e-3", "hydra.launcher.timeout_min=2",
         "hydra.launcher.max_num_timeout=1", "hydra.launcher.signal_delay_s=30", f"hydra.sweep.dir={sweep}"],
        tmp, env)
    yield proc, tmp, sweep
    if proc.poll() is None:  # the module ended early (a failure, -k): leave nothing running on the cluster
        proc.kill()
        proc.communicate()
        if (sweep / ".submitit").is_dir():
            subprocess.run(["scancel", *array_ids(sweep)], env=cluster_env(slurm_cluster), check=False)


def test_a_job_at_its_time_limit_is_requeued_and_finishes_from_its_checkpoint(slurm_cluster, time_limit_sweep):
    proc, tmp, sweep = time_limit_sweep
    code, out = finish(proc)
    assert code == 0, out[-3000:]
    (job,) = job_dirs(sweep).values()
    assert Path((tmp / "paused").read_text()) == job  # the first attempt slept at step 4
    assert metrics(job)["status"] == "completed" and resumed_at(job) == PAUSE_AT - 1
    (job_id,) = [p.name for p in (sweep / ".submitit").iterdir() if p.is_dir()]

    def shown() -> str:
        return subprocess.run(["scontrol", "show", "job", job_id], env=cluster_env(slurm_cluster),
                              capture_output=True, text=True, check=True).stdout

    # submitit has the result as soon as the job wrote it; SLURM says COMPLETED once the job's process has exited
    wait_until(lambda: "JobState=RUNNING" not in shown() and "JobState=COMPLETING" not in shown(),
               "SLURM to see the job end", timeout=60)
    assert "Restarts=1" in shown() and "JobState=COMPLETED" in shown(), shown()  # one requeue, by submitit
