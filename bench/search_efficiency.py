"""What pruning and an adaptive search save against the grid, in training steps and on the user's clock.

On the CPU, model=tiny on the embedded synthetic data, three searches over 3 patterns x lrs from too low to
too high, each a real `python train.py -m ...` in its own directory:
  (a) grid: every configuration run to its end (early stopping aside);
  (b) the same grid with prune=asha;
  (c) hydra/sweeper=optuna, as many trials as the grid has jobs (TPE, seed 0 or --seed), over the same candidates as
      the grid (`choice` of its patterns and lrs: the seed plan lists its lrs), with prune=asha. A point
      drawn twice costs a skip, not a job (the sweep's fingerprint resume);
  (d) with --interval, also the Optuna search over the lr range as a log interval (a point between the grid's).
For each: wall time of the whole command, total training steps (sum of the jobs' steps_run), the best
monitored validation value (best_monitored, the default monitor), the ratios of wall time and steps to (a),
and when the search first held a job within 1% of the grid's best (`reach_s`: that job's metrics.json written,
from the search's start; the user's time to the answer when the search is stopped there).
Before the searches, `plan=true`'s estimate of the grid (its calibration in a process like the grid's) is set
against the grid's measured wall time.

Scales (--scale):
  default  3 patterns x 4 lrs, 3 epochs x 6 steps, a check every 2 steps (9 checks), context 64 (12 jobs);
  seed     3 patterns x 6 lrs, 3 epochs x 30 steps, a check every 10 steps (9 checks): 18 jobs, the seed
           plan's small stage grown to 6 lrs, with its window shape (context 512, prediction 96, patch 32) on
           20 columns of the embedded data. Runs on the CPU in under 15 minutes (a quiet 2-core machine);
  smoke    2 patterns x 2 lrs: checks the script runs.
The last line is the contract:
  wall ratio asha=<r> optuna=<r>; steps ratio asha=<r> optuna=<r>; best gap asha=<g>% optuna=<g>%
(gap: how much worse than the grid's best, in % of its magnitude; 0 = the grid's best was found).
Run: `python bench/search_efficiency.py [--scale seed] [--out results.json] [--workdir DIR]`; --out writes
every figure, the machine, versions and commands as JSON (rewritten after each search), for unattended runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATTERNS = ("full", "freeze_ffn", "head_only")
COMMON = ["model=tiny", "hardware=cpu", "warmup_steps=0", "eval.plot_windows=0", "hardware.progress_bar_refresh=0"]
SCALES = {
    "default": {
        "patterns": PATTERNS, "lrs": (1e-6, 1e-4, 3e-3, 1e-1),
        "job": [*COMMON, "data.num_columns=3", "data.num_days=30", "context_length=64", "prediction_length=16",
                "patch_size=16", "batch_size=16", "steps_per_epoch=6", "epochs=3", "val_check_interval=2",
                "val_max_windows=64", "eval.max_windows=8", "eval.num_samples=4"],
    },
    "seed": {
        "patterns": PATTERNS, "lrs": (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
        "job": [*COMMON, "data.num_columns=20", "data.num_days=120", "context_length=512", "prediction_length=96",
                "patch_size=32", "batch_size=32", "steps_per_epoch=30", "epochs=3", "val_check_interval=10",
                "val_max_windows=128", "eval.max_windows=64", "eval.num_samples=20"],
    },
}
SCALES["smoke"] = {**SCALES["default"], "patterns": PATTERNS[::2], "lrs": (1e-4, 3e-3)}
# the plan of a command line, as train.py's plan=true computes it, as JSON on stdout
PLAN_SNIPPET = ("import json, sys; from pathlib import Path; from moirai_ft.budget.expand import expand; "
                "from moirai_ft.budget.plan import plan_sweep; "
                "print(json.dumps(plan_sweep(expand(sys.argv[2:], Path(sys.argv[1]))).to_dict()))")


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _value(job: dict) -> float | None:
    ok = job.get("status") in ("completed", "pruned") and isinstance(job.get("best_monitored"), (int, float))
    return float(job["best_monitored"]) if ok else None


def run_search(name: str, args: list[str], job: list[str], workdir: Path) -> dict:
    cwd = workdir / name
    cwd.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(ROOT / "train.py"), "-m", *job, *args]
    started, epoch = time.perf_counter(), time.time()
    proc = subprocess.run(command, cwd=cwd, env=environment(), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
    files = sorted((cwd / "multirun").rglob("metrics.json"), key=lambda p: p.stat().st_mtime)
    jobs = [json.loads(p.read_text()) for p in files]
    values = [v for v in map(_value, jobs) if v is not None]
    return {
        # (finished s from the start, best value) per job in the order they finished: reach_s is read from it
        "finished": [[round(p.stat().st_mtime - epoch, 2), _value(j)] for p, j in zip(files, jobs)],
        "name": name, "command": " ".join(command[1:]), "jobs": len(jobs),
        "pruned": sum(j.get("status") == "pruned" for j in jobs),
        "steps": sum(int(j.get("steps_run") or 0) for j in jobs), "wall_s": round(wall, 2),
        "jobs_wall_s": round(sum(float(j.get("wall_s") or 0) for j in jobs), 2),
        "best": min(values) if values else math.nan, "returncode": proc.returncode,
    }


def plan_estimate(args: list[str], job: list[str], workdir: Path) -> dict:
    """plan=true's figures for the grid, from a process started as the grid's is."""
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", PLAN_SNIPPET, str(ROOT / "conf"), "-m", *job, *args],
                          cwd=workdir, env=environment(), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        return {"total_s": math.nan, "low_s": math.nan}
    plan = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"total_s": plan["total_s"], "low_s": plan["low_s"], "startup_s": plan["startup_s"],
            "calibrations": plan["calibrations"], "jobs": [{k: j[k] for k in ("name", "estimate_s", "parts")}
                                                          for j in plan["jobs"]]}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "lightning", "optuna", "hydra-core", "uni2ts", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def machine() -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
            "load_at_start": [round(x, 2) for x in load]}


def write(out: Path | None, report: dict) -> None:
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2, default=str))
        tmp.replace(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="default")
    p.add_argument("--smoke", action="store_true", help="the same as --scale smoke")
    p.add_argument("--out", type=Path, default=None, help="a JSON file for every figure (rewritten after each search)")
    p.add_argument("--workdir", type=Path, default=None, help="where the searches run (default: a temp dir)")
    p.add_argument("--interval", action="store_true",
                   help="also the Optuna search over the lr range as a log interval (search (d))")
    p.add_argument("--seed", type=int, default=0, help="the Optuna sampler's seed (hydra.sweeper.seed)")
    args = p.parse_args()
    scale = "smoke" if args.smoke else args.scale
    spec = SCALES[scale]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="search_efficiency_"))
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):  # an earlier run's jobs would be found as finished twins and skipped
        p.error(f"--workdir {workdir} is not empty: give a new directory")
    patterns, lrs, job = spec["patterns"], spec["lrs"], spec["job"]
    trials = len(patterns) * len(lrs)
    grid = [f"pattern={','.join(patterns)}", f"lr={','.join(f'{v:g}' for v in lrs)}"]
    optuna = ["hydra/sweeper=optuna", f"hydra.sweeper.n_trials={trials}", f"hydra.sweeper.seed={args.seed}",
              f"pattern=choice({','.join(patterns)})"]
    searches = [
        ("grid", grid),
        ("grid+asha", [*grid, "prune=asha"]),
        ("optuna+asha", [*optuna, f"lr=choice({','.join(f'{v:g}' for v in lrs)})", "prune=asha"]),
    ]
    if args.interval:
        searches.append(("optuna+asha (lr interval)",
                         [*optuna, f"lr=tag(log,interval({min(lrs):g},{max(lrs):g}))", "prune=asha"]))
    report = {"scale": scale, "optuna_seed": args.seed, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "versions": versions(), "job": job, "searches": []}
    started = time.perf_counter()
    report["plan"] = plan_estimate(grid, job, workdir)
    write(args.out, report)
    for name, search in searches:
        report["searches"].append(run_search(name, search, job, workdir))
        write(args.out, report)
    results = report["searches"]
    base = results[0]
    print(f"{'search':<26} {'jobs':>4} {'pruned':>6} {'steps':>6} {'ratio':>6} {'wall_s':>7} {'ratio':>6} "
          f"{'reach_s':>7} {'ratio':>6} {'best':>9}")
    for r in results:
        r["ratio"] = r["steps"] / base["steps"] if base["steps"] else math.nan
        r["wall_ratio"] = r["wall_s"] / base["wall_s"] if base["wall_s"] else math.nan
        r["gap"] = 100 * (r["best"] - base["best"]) / abs(base["best"]) if base["best"] else math.nan
        within = base["best"] + 0.01 * abs(base["best"])
        r["reach_s"] = next((t for t, v in r["finished"] if v is not None and v <= within), math.nan)
        r["reach_ratio"] = r["reach_s"] / base["wall_s"] if base["wall_s"] else math.nan
        print(f"{r['name']:<26} {r['jobs']:>4} {r['pruned']:>6} {r['steps']:>6} {r['ratio']:>6.2f} "
              f"{r['wall_s']:>7.1f} {r['wall_ratio']:>6.2f} {r['reach_s']:>7.1f} {r['reach_ratio']:>6.2f} {r['best']:>9.4f}")
    plan = report["plan"]
    plan["error_pct"] = 100 * (plan["total_s"] - base["wall_s"]) / base["wall_s"] if base["wall_s"] else math.nan
    print(f"plan=true for the grid: est. {plan['total_s']:.1f} s (with asha {plan['low_s']:.1f} s), measured "
          f"{base['wall_s']:.1f} s: {plan['error_pct']:+.0f}%")
    report["total_s"] = round(time.perf_counter() - started, 1)
    report["machine"]["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
    asha, optuna = results[1], results[2]
    report["last_line"] = (f"wall ratio asha={asha['wall_ratio']:.2f} optuna={optuna['wall_ratio']:.2f}; "
                           f"steps ratio asha={asha['ratio']:.2f} optuna={optuna['ratio']:.2f}; "
                           f"best gap asha={asha['gap']:.1f}% optuna={optuna['gap']:.1f}%")
    write(args.out, report)
    print(f"all three searches and the plan: {report['total_s']:.0f} s; load average {report['machine']['load_at_start']}"
          f" at the start, {report['machine']['load_at_end']} at the end")
    print(report["last_line"])


if __name__ == "__main__":
    main()
