"""What pruning and an adaptive search save: training steps to reach the grid's best.

On the CPU, model=tiny on the embedded synthetic data, three searches over 3 patterns x lr from too low
to too high, each a real `python train.py -m ...` in its own directory:
  (a) grid: the 12 configurations, every one run to its end (early stopping aside);
  (b) the same grid with prune=asha;
  (c) hydra/sweeper=optuna, 12 trials (TPE, seed 0) over the same patterns and the lr range, prune=asha.
For each: total training steps (sum of the jobs' steps_run), wall time, the best monitored validation
value (best_monitored, monitor=val_nll), and the ratio of steps to (a). The last line is the contract:
  steps ratio asha=<r> optuna=<r>; best gap asha=<g>% optuna=<g>%
(gap: how much worse than the grid's best, in % of its magnitude; 0 = the grid's best was found).
Run: `python bench/search_efficiency.py [--out DIR] [--smoke]` (--smoke: 2 patterns x 2 lrs, 4 trials).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATTERNS = ("full", "freeze_ffn", "head_only")
LRS = (1e-6, 1e-4, 3e-3, 1e-1)  # too low, low, about right, too high for the tiny model
JOB = [
    "model=tiny", "hardware=cpu", "data.num_columns=3", "data.num_days=30", "context_length=64",
    "prediction_length=16", "patch_size=16", "batch_size=16", "steps_per_epoch=6", "epochs=3",
    "val_check_interval=2", "warmup_steps=0", "val_max_windows=64", "eval.max_windows=8", "eval.num_samples=4",
    "eval.plot_windows=0", "hardware.progress_bar_refresh=0",
]


def run_search(name: str, args: list[str], out: Path) -> dict:
    cwd = out / name
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", *JOB, *args], cwd=cwd, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
    jobs = [json.loads(p.read_text()) for p in (cwd / "multirun").rglob("metrics.json")]
    values = [j["best_monitored"] for j in jobs
              if j.get("status") in ("completed", "pruned") and isinstance(j.get("best_monitored"), (int, float))]
    return {
        "name": name, "jobs": len(jobs), "pruned": sum(j.get("status") == "pruned" for j in jobs),
        "steps": sum(int(j.get("steps_run") or 0) for j in jobs), "wall_s": wall,
        "best": min(values) if values else math.nan, "returncode": proc.returncode,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None, help="where the three searches run (default: a temp dir)")
    p.add_argument("--smoke", action="store_true", help="2 patterns x 2 lrs and 4 trials: checks the script runs")
    args = p.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="search_efficiency_"))
    patterns, lrs = (PATTERNS[::2], LRS[1:3]) if args.smoke else (PATTERNS, LRS)
    trials = len(patterns) * len(lrs)
    grid = [f"pattern={','.join(patterns)}", f"lr={','.join(f'{v:g}' for v in lrs)}"]
    space = [f"pattern=choice({','.join(patterns)})", f"lr=tag(log,interval({min(lrs):g},{max(lrs):g}))"]
    searches = [
        ("grid", grid),
        ("grid+asha", [*grid, "prune=asha"]),
        ("optuna+asha", ["hydra/sweeper=optuna", f"hydra.sweeper.n_trials={trials}", "hydra.sweeper.seed=0",
                         *space, "prune=asha"]),
    ]
    results = [run_search(name, search, out) for name, search in searches]
    base = results[0]
    print(f"{'search':<12} {'jobs':>4} {'pruned':>6} {'steps':>6} {'ratio':>6} {'wall_s':>7} {'best':>9}")
    for r in results:
        r["ratio"] = r["steps"] / base["steps"] if base["steps"] else math.nan
        r["gap"] = 100 * (r["best"] - base["best"]) / abs(base["best"]) if base["best"] else math.nan
        print(f"{r['name']:<12} {r['jobs']:>4} {r['pruned']:>6} {r['steps']:>6} {r['ratio']:>6.2f} "
              f"{r['wall_s']:>7.1f} {r['best']:>9.4f}")
    asha, optuna = results[1], results[2]
    print(f"steps ratio asha={asha['ratio']:.2f} optuna={optuna['ratio']:.2f}; "
          f"best gap asha={asha['gap']:.1f}% optuna={optuna['gap']:.1f}%")


if __name__ == "__main__":
    main()
