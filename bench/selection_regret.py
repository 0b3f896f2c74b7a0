"""Which `monitor=` picks the job that is best on test: selection regret on real multivariate data.

For each dataset (a wide CSV passed by path; at least three, none committed: see BENCHMARKS.md for the
files used and where they come from) and each monitor (val_nll, val_crps, val_mae), one real
`python train.py -m` sweep of the tiny model over 2 patterns x 3 learning rates, identical but for
`monitor=`. The monitor selects each job's kept weights (and early stopping), and ranks the jobs: the
ranked-first job is the one with the lowest `best_monitored`, what the sweeper minimises.

Regret of a monitor on a dataset: how much worse the ranked-first job's test MAE (and test CRPS, i.e.
`wql`) is than the best test value of any job on that dataset (all three monitors' sweeps: one reference
per dataset), in % of the best. A monitor's regret on a dataset is the mean of its MAE and CRPS regrets;
the last line is the contract, each monitor's mean over datasets:
  regret val_nll=<r>% val_crps=<r>% val_mae=<r>%
Run: `python bench/selection_regret.py DATA.csv DATA2.csv DATA3.csv [--seed N] [--out DIR] [--json FILE]`;
`--smoke` (one dataset allowed, 1 pattern x 2 lrs, a few steps) checks that the script runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MONITORS = ("val_nll", "val_crps", "val_mae")
PATTERNS = ("full", "head_only")
LRS = (1e-4, 1e-3, 1e-2)  # low, about right, high for the tiny model
JOB = [
    "model=tiny", "hardware=cpu", "data=csv", "context_length=64", "prediction_length=16", "patch_size=16",
    "batch_size=16", "steps_per_epoch=20", "epochs=3", "val_check_interval=10", "warmup_steps=0",
    "val_max_windows=64", "monitor_samples=16", "eval.max_windows=64", "eval.num_samples=32",
    "eval.plot_windows=0",
]
SMOKE = ["steps_per_epoch=4", "epochs=1", "val_check_interval=2", "val_max_windows=8", "eval.max_windows=8",
         "eval.num_samples=8", "monitor_samples=4"]


def run_sweep(data: Path, monitor: str, patterns, lrs, extra: list[str], out: Path) -> list[dict]:
    """One `train.py -m` sweep in its own directory; its jobs' metrics.json."""
    cwd = out / data.stem / monitor
    cwd.mkdir(parents=True, exist_ok=True)
    # one thread: the tiny model gains nothing from more, and on a shared machine more threads than free
    # cores slow every step by orders of magnitude
    env = {"OMP_NUM_THREADS": "1", **os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    args = [sys.executable, str(ROOT / "train.py"), "-m", *JOB, *extra, f"data.path={data.resolve()}",
            f"monitor={monitor}", f"pattern={','.join(patterns)}", f"lr={','.join(f'{v:g}' for v in lrs)}"]
    with open(cwd / "sweep.log", "w") as log:
        proc = subprocess.run(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    jobs = [json.loads(p.read_text()) for p in sorted((cwd / "multirun").rglob("metrics.json"))]
    if proc.returncode != 0 or len(jobs) != len(patterns) * len(lrs):
        raise SystemExit(f"{data.name} monitor={monitor}: exit {proc.returncode}, {len(jobs)} jobs; "
                         f"see {cwd / 'sweep.log'}")
    return jobs


def regret(value: float, best: float) -> float:
    return 100 * (value - best) / abs(best) if best else math.nan


def versions() -> dict:
    out = {"python": platform.python_version(), "machine": f"{platform.machine()}, {os.cpu_count()} cpus"}
    for pkg in ("torch", "lightning", "uni2ts", "numpy", "pandas"):
        out[pkg] = metadata.version(pkg)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="+", type=Path, help="wide CSV files (a timestamp column, numeric columns)")
    p.add_argument("--out", type=Path, default=None, help="where the sweeps run (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None, help="write every figure here too")
    p.add_argument("--seed", type=int, default=0, help="the sweep's seed (the tiny model's random start, the data order)")
    p.add_argument("--smoke", action="store_true", help="1 pattern x 2 lrs, a few steps: checks the script runs")
    args = p.parse_args()
    if len(args.data) < 3 and not args.smoke:
        p.error("give at least three datasets: one or two decide nothing")
    out = args.out or Path(tempfile.mkdtemp(prefix="selection_regret_"))
    patterns, lrs, extra = (PATTERNS[:1], LRS[:2], SMOKE) if args.smoke else (PATTERNS, LRS, [])
    extra = [*extra, f"seed={args.seed}"]
    started = time.perf_counter()

    rows = []
    for data in args.data:
        sweeps = {m: run_sweep(data, m, patterns, lrs, extra, out) for m in MONITORS}
        done = {m: [j for j in jobs if j.get("status") == "completed"] for m, jobs in sweeps.items()}
        every = [j for jobs in done.values() for j in jobs]
        best_mae = min(j["test"]["mae"] for j in every)
        best_crps = min(j["test"]["wql"] for j in every)
        for m in MONITORS:
            first = min(done[m], key=lambda j: j["best_monitored"])
            r_mae, r_crps = regret(first["test"]["mae"], best_mae), regret(first["test"]["wql"], best_crps)
            rows.append({"dataset": data.stem, "monitor": m, "pattern": first["pattern"], "lr": first["lr"],
                         "test_mae": first["test"]["mae"], "best_mae": best_mae, "regret_mae": r_mae,
                         "test_crps": first["test"]["wql"], "best_crps": best_crps, "regret_crps": r_crps,
                         "regret": (r_mae + r_crps) / 2, "jobs": len(done[m]),
                         "zero_shot_mae": first["zero_shot_test"]["mae"]})

    print(f"{'dataset':<18} {'monitor':<9} {'ranked first':<20} {'test MAE':>10} {'best':>10} {'regret':>7} "
          f"{'test CRPS':>9} {'best':>9} {'regret':>7}")
    for r in rows:
        job = f"{r['pattern']} lr={r['lr']:g}"
        print(f"{r['dataset']:<18} {r['monitor']:<9} {job:<20} {r['test_mae']:>10.4g} {r['best_mae']:>10.4g} "
              f"{r['regret_mae']:>6.1f}% {r['test_crps']:>9.4f} {r['best_crps']:>9.4f} {r['regret_crps']:>6.1f}%")
    mean = {m: sum(r["regret"] for r in rows if r["monitor"] == m) / len(args.data) for m in MONITORS}
    if args.json:
        args.json.write_text(json.dumps({
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **versions(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "job": JOB + extra,
            "patterns": patterns, "lrs": lrs, "wall_s": round(time.perf_counter() - started, 1),
            "rows": rows, "regret": mean}, indent=1))
    print("regret " + " ".join(f"{m}={mean[m]:.1f}%" for m in MONITORS))


if __name__ == "__main__":
    main()
