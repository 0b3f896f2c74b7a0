"""A job's fixed start-up cost: from `python train.py ...` to its first training step.

Runs a tiny CPU job (model=tiny, 3 synthetic columns, 2 steps) `--repeats` times as a user runs it, reads
its stderr as it comes, and takes the moment the training progress bar first appears ("Epoch 0:", drawn
when the first training step starts, after the imports, the data, the model and the zero-shot validation).
Reports, median over the repeats: the wall time to that moment, the CPU time the process had used by then
(user + system, from /proc: steadier than wall time on a shared machine), and the time to import the
training path (`import moirai_ft.train.job`) with whether that put `transformers` in sys.modules.

    python bench/startup.py [--repeats 5] [--repo DIR]

`--repo`: another checkout of moirai-ft to time (its train.py and package), e.g. an older commit in a
`git worktree`, for a before/after figure on the same machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOB = [
    "model=tiny", "hardware=cpu", "data.num_columns=3", "data.num_days=30", "context_length=64",
    "prediction_length=16", "patch_size=16", "batch_size=16", "steps_per_epoch=2", "epochs=1",
    "warmup_steps=0", "val_max_windows=64", "eval.max_windows=8", "eval.num_samples=4", "eval.plot_windows=0",
    "hardware.progress_bar_refresh=1", "logger=csv",
]
MARK = b"Epoch 0:"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a running process (Linux /proc), NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def env_for(repo: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(repo)}


def time_to_first_step(repo: Path, cwd: Path) -> tuple[float, float, float]:
    """(wall s, CPU s) from the launch to the first training step, and the whole run's wall s."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(repo / "train.py"), *JOB], cwd=cwd, env=env_for(repo),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # Lightning's bars go to stdout
    seen: dict[str, float] = {}

    def read() -> None:
        tail = b""
        while chunk := proc.stdout.read1(4096):
            if "wall" not in seen and MARK in tail + chunk:
                seen["cpu"] = cpu_seconds(proc.pid)
                seen["wall"] = time.perf_counter() - started
            tail = chunk[-len(MARK):]

    reader = threading.Thread(target=read)
    reader.start()
    proc.wait()
    reader.join()
    total = time.perf_counter() - started
    if proc.returncode != 0 or "wall" not in seen:
        raise SystemExit(f"the job failed or never started training (exit {proc.returncode})")
    return seen["wall"], seen["cpu"], total


def import_time(repo: Path) -> tuple[float, bool]:
    code = ("import sys, time; t = time.perf_counter(); import moirai_ft.train.job; "
            "print(time.perf_counter() - t, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env_for(repo), capture_output=True,
                         text=True, check=True).stdout.split()
    return float(out[-2]), out[-1] == "True"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--repo", type=Path, default=ROOT, help="the checkout to time (default: this one)")
    args = p.parse_args()
    repo = args.repo.resolve()
    rows = []
    with tempfile.TemporaryDirectory(prefix="startup_") as tmp:
        for i in range(args.repeats):
            cwd = Path(tmp) / str(i)
            cwd.mkdir()
            rows.append((*time_to_first_step(repo, cwd), *import_time(repo)))
            print(f"run {i}: first step after {rows[-1][0]:.2f} s wall, {rows[-1][1]:.2f} s CPU; "
                  f"whole job {rows[-1][2]:.2f} s; import {rows[-1][3]:.2f} s", flush=True)
    med = [statistics.median(r[k] for r in rows) for k in range(4)]
    print(f"{repo}: median of {args.repeats}: first training step after {med[0]:.2f} s wall "
          f"({med[1]:.2f} s CPU), whole job {med[2]:.2f} s; import of the training path {med[3]:.2f} s, "
          f"transformers imported: {rows[-1][4]}")


if __name__ == "__main__":
    main()
