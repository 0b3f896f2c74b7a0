"""N fine-tuning jobs at once on one GPU, launched the way a user launches them (hydra/launcher=local):
their aggregate training samples/s against one job alone, and the GPU memory each job holds.

GPU, the measurement for BENCHMARKS.md (about 10 minutes with the defaults):
    python bench/concurrent_jobs.py --jobs 1,2,4,8 --model small --steps 300
CPU smoke, to check the script end to end (its figures mean nothing):
    python bench/concurrent_jobs.py --smoke

For each N it runs `train.py -m hydra/launcher=local seed=0,...,N-1 ...` (N jobs that differ only in
their seed) into its own sweep directory. A job's samples/s is its metrics.json `train_samples_per_s`
(training steps only, validation excluded); the aggregate is their sum, which counts the jobs as training
at the same time: the steps are many against the start-up skew, and the sweep's total samples over its
whole wall time (start-up, validation and test evaluation included) is printed beside it. GPU memory per
job: the largest `nvidia-smi` used_memory of each job process, sampled every second (its CUDA context
included), and the GPU's mean utilisation over the sweep.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# the job every N runs: one short epoch, a small validation, a token test evaluation, no resume lookup
COMMON = [
    "epochs=1", "val_check_interval=1.0", "val_max_windows=256", "warmup_steps=0", "patience=100",
    "eval.num_samples=10", "eval.max_windows=64", "eval.plot_windows=0", "resume=false",
]
SMOKE = [  # tests/conftest.py's TINY job on the CPU
    "model=tiny", "hardware=cpu", "data.num_columns=3", "data.num_days=30", "context_length=64",
    "prediction_length=16", "patch_size=16", "batch_size=16", "lr=1e-3",
]


@dataclass
class Result:
    jobs: int
    statuses: list[str]
    per_job_samples_per_s: list[float]
    aggregate_samples_per_s: float
    sweep_wall_s: float
    samples_over_sweep_wall_per_s: float
    gpu_mem_mib_per_job: list[int] = field(default_factory=list)  # empty without nvidia-smi or its pids
    gpu_mem_peak_total_mib: int | None = None  # the whole GPU's peak used memory during the sweep
    gpu_util_mean_pct: float | None = None


class GpuSampler(threading.Thread):
    """nvidia-smi every second: the largest memory each GPU process held, and the GPU's utilisation."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.available = shutil.which("nvidia-smi") is not None
        self.mem_by_pid: dict[int, int] = {}
        self.util: list[float] = []
        self.total_mib = 0  # peak of the GPU's used memory: per-process figures are missing in some containers
        self._halt = threading.Event()

    def _query(self, args: list[str]) -> list[list[str]]:
        out = subprocess.run(["nvidia-smi", *args, "--format=csv,noheader,nounits"], capture_output=True, text=True)
        return [[c.strip() for c in line.split(",")] for line in out.stdout.splitlines() if line.strip()]

    def run(self) -> None:
        while self.available and not self._halt.wait(1.0):
            for pid, mem in self._query(["--query-compute-apps=pid,used_memory"]):
                if pid.isdigit() and mem.isdigit():
                    self.mem_by_pid[int(pid)] = max(self.mem_by_pid.get(int(pid), 0), int(mem))
            for util, used in self._query(["--query-gpu=utilization.gpu,memory.used"]):
                self.util.append(float(util))
                self.total_mib = max(self.total_mib, int(float(used)))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def run_sweep(n: int, overrides: list[str], out: Path, steps: int) -> Result:
    sweep = out / f"jobs_{n}"
    seeds = ",".join(str(s) for s in range(n)) if n > 1 else "0"
    cmd = [
        sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=local", f"hydra.sweep.dir={sweep}",
        f"sweep_root={out}", f"steps_per_epoch={steps}", *COMMON, *overrides, f"seed={seeds}",
    ]
    # the job processes unpickle the task, which imports moirai_ft: found whether or not it is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    print(f"\n== {n} job(s) at once: {shlex.join(cmd)}", flush=True)
    sampler = GpuSampler()
    sampler.start()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    sampler.stop()
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n", file=sys.stderr)
    metrics = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    rates = [float(m.get("train_samples_per_s") or 0.0) for m in metrics]
    samples = sum(int(m.get("steps_run", 0)) * int(m.get("batch_size", 0)) for m in metrics)
    return Result(
        jobs=n,
        statuses=[m["status"] for m in metrics],
        per_job_samples_per_s=[round(r, 1) for r in rates],
        aggregate_samples_per_s=round(sum(rates), 1),
        sweep_wall_s=round(wall, 1),
        samples_over_sweep_wall_per_s=round(samples / wall, 1),
        gpu_mem_mib_per_job=sorted(sampler.mem_by_pid.values()),
        gpu_mem_peak_total_mib=sampler.total_mib if sampler.available else None,
        gpu_util_mean_pct=round(sum(sampler.util) / len(sampler.util), 1) if sampler.util else None,
    )


def markdown(results: list[Result]) -> str:
    alone = next((r.aggregate_samples_per_s for r in results if r.jobs == 1), None)
    lines = [
        "| jobs at once | aggregate samples/s | vs one job alone | per job samples/s | samples/s over the sweep's wall time | GPU memory per job (MiB) | GPU memory peak, all jobs (MiB) | mean GPU util % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = f"{r.aggregate_samples_per_s / alone:.2f}x" if alone else ""
        mem = ", ".join(str(m) for m in r.gpu_mem_mib_per_job) or "n/a (no nvidia-smi)"
        lines.append(
            f"| {r.jobs} | {r.aggregate_samples_per_s:,.0f} | {ratio} | {', '.join(f'{x:,.0f}' for x in r.per_job_samples_per_s)} "
            f"| {r.samples_over_sweep_wall_per_s:,.0f} | {mem} | {r.gpu_mem_peak_total_mib if r.gpu_mem_peak_total_mib is not None else 'n/a'} "
            f"| {r.gpu_util_mean_pct if r.gpu_util_mean_pct is not None else 'n/a'} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", default=None, help="comma-separated numbers of concurrent jobs; include 1 "
                                                 "(default 1,2,4,8; smoke 1,2)")
    p.add_argument("--model", default="small", help="model group option (small, base, ...)")
    p.add_argument("--steps", type=int, default=300, help="training steps per job")
    p.add_argument("--columns", type=int, default=20, help="synthetic data columns")
    p.add_argument("--days", type=int, default=60, help="synthetic data days")
    p.add_argument("--out", type=Path, default=None, help="where the sweeps and concurrent_jobs.json go (default: a temp dir)")
    p.add_argument("--smoke", action="store_true", help="tiny CPU jobs, 1 and 2 at once: checks the script, measures nothing")
    p.add_argument("extra", nargs="*", help="more train.py overrides, e.g. batch_size=128 hardware.compile=default")
    args = p.parse_args()

    counts = [int(n) for n in (args.jobs or ("1,2" if args.smoke else "1,2,4,8")).split(",")]
    if args.smoke:
        steps, overrides = 6, SMOKE
    else:
        steps = args.steps
        overrides = [f"model={args.model}", "model.init=random", "hardware=gpu",
                     f"data.num_columns={args.columns}", f"data.num_days={args.days}"]
    out = (args.out or Path(tempfile.mkdtemp(prefix="concurrent_jobs_"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    for n in counts:
        results.append(run_sweep(n, overrides + args.extra, out, steps))
        # after every sweep: a run cut off at its time limit still leaves what it measured
        report = {"command": shlex.join([sys.executable, *sys.argv]), "overrides": overrides + args.extra,
                  "steps": steps, "results": [asdict(r) for r in results]}
        tmp = out / "concurrent_jobs.json.tmp"
        tmp.write_text(json.dumps(report, indent=2))
        tmp.replace(out / "concurrent_jobs.json")
    print("\n" + markdown(results))
    print(f"\ncommand: {report['command']}\nresults: {out / 'concurrent_jobs.json'}")
    failed = [s for r in results for s in r.statuses if s != "completed"]
    return 1 if failed or any(len(r.statuses) != r.jobs for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
