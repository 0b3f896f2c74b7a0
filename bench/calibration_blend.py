"""Coverage before and after conformal calibration, and what the fine-tuned/zero-shot blend does, on the
embedded building data and on public real datasets.

No machine here reaches the Hugging Face hub, so the "zero-shot" model is a stand-in for a pretrained
Moirai: model=tiny (Moirai 1.x, 2 layers, d_model 64), first trained from a random start on the embedded
synthetic sensors (data=synthetic) and saved; every dataset's job starts from it (model.init=pretrained,
model.checkpoint=<that job>), so zero-shot means "trained on other data", as for the real checkpoints.
Each dataset is one real `python train.py ... calibrate=conformal blend=true` on the CPU.

Datasets (not in the repository; see --data): the embedded building plant (data=building, its targets with
their covariates), and the CSVs weather.csv (Jena, 10 min, 21 columns), exchange_rate.csv (8 daily rates) and
national_illness.csv (weekly ILI, 7 columns), the long-sequence-forecasting benchmark copies.

Run: `python bench/calibration_blend.py [--data /work/wt/data] [--out DIR] [--seed N] [--smoke]`
Prints one markdown table (the BENCHMARKS.md one) and writes DIR/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COMMON = [
    "model=tiny", "hardware=cpu", "batch_size=32", "lr=1e-3", "warmup_steps=0", "val_max_windows=256",
    "eval.max_windows=256", "eval.num_samples=100", "eval.plot_windows=0", "hardware.progress_bar_refresh=0",
    "logger=csv", "resume=false",
]
PRETRAIN = ["data=synthetic", "data.num_columns=8", "data.num_days=60", "context_length=128", "prediction_length=32",
            "patch_size=16", "epochs=3", "steps_per_epoch=100", "val_check_interval=1.0"]
FINETUNE = ["model.init=pretrained", "calibrate=conformal", "blend=true", "epochs=3", "steps_per_epoch=40",
            "patience=3"]


def datasets(data: Path) -> dict[str, list[str]]:
    csv = lambda name: ["data=csv", f"data.path={data / name}", "data.drop_bad_columns=true"]  # noqa: E731
    return {
        "building (embedded)": ["data=building", "data.num_days=60", "context_length=128", "prediction_length=32",
                                "patch_size=16"],
        "weather": csv("weather.csv") + ["context_length=144", "prediction_length=36", "patch_size=16"],
        "exchange_rate": csv("exchange_rate.csv") + ["context_length=128", "prediction_length=30", "patch_size=16"],
        "national_illness": csv("national_illness.csv") + ["context_length=104", "prediction_length=24",
                                                           "patch_size=8"],
    }


def train(args: list[str], job_dir: Path) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *COMMON, *args, f"hydra.run.dir={job_dir}"],
                          cwd=job_dir.parent, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    metrics_path = job_dir / "metrics.json"
    if proc.returncode != 0 or not metrics_path.is_file():
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"job {job_dir} failed (exit {proc.returncode})")
    metrics = json.loads(metrics_path.read_text())
    if metrics.get("status") != "completed" or "test" not in metrics:
        raise SystemExit(f"job {job_dir}: {metrics.get('status')} {metrics.get('error') or metrics.get('test_error')}")
    metrics["bench_wall_s"] = round(wall, 1)
    return metrics


def row(name: str, m: dict[str, Any]) -> dict[str, Any]:
    cal = m["calibration"]["fine-tuned"]["test"]
    ci, rel = m["blend_ci"], m["blend_rel_improvement"]

    def sig(part: str) -> str:  # the relative improvement [its 95% interval], * where it excludes 0
        interval, value = ci[part].get("wql"), rel[part].get("wql")
        if interval is None:
            return "n/a"
        lo, hi = interval
        return f"{value:+.1%} [{lo:+.1%}, {hi:+.1%}]" + (" *" if lo > 0 or hi < 0 else "")

    return {
        "dataset": name,
        "test items": m["test_eval"]["series_windows"],
        "zero-shot cov80": m["zero_shot_test"]["coverage_80"],
        "fine-tuned cov80 raw -> calibrated": f"{cal['coverage_80_before']:.3f} -> {cal['coverage_80_after']:.3f}",
        "fine-tuned wql raw -> calibrated": f"{cal['wql_before']:.4f} -> {cal['wql_after']:.4f}",
        "zero-shot wql": m["zero_shot_test"]["wql"],
        "blend w": m["blend_weight"],
        "blend wql": m["test_blend"]["wql"],
        "blend vs fine-tuned (wql)": sig("vs_fine_tuned"),
        "blend vs zero-shot (wql)": sig("vs_zero_shot"),
        "blend cov80 calibrated": m["test_blend_calibrated"]["coverage_80"],
        "residuals/step": m["calibration"]["residuals_per_step"],
        "wall s": m["bench_wall_s"],
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    cols = list(rows[0])
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("/work/wt/data"), help="directory of the public CSVs")
    p.add_argument("--out", type=Path, default=None, help="where the jobs go (default: a temporary directory)")
    p.add_argument("--smoke", action="store_true", help="a few steps each: checks the script, measures nothing")
    p.add_argument("--only", nargs="*", default=None, help="dataset names to run (default: all)")
    p.add_argument("--seed", type=int, default=0, help="the jobs' seed: initialisation, data order, sampling")
    p.add_argument("--table", type=Path, default=None, help="print the table of an earlier run's results.json, run nothing")
    args = p.parse_args()
    if args.table:
        print(table_of(args.table))
        return
    COMMON.append(f"seed={args.seed}")
    out = args.out or Path(tempfile.mkdtemp(prefix="calibration_blend_"))
    out.mkdir(parents=True, exist_ok=True)
    smoke = ["steps_per_epoch=3", "epochs=1", "eval.max_windows=16", "val_max_windows=32", "eval.num_samples=20"]
    pretrained = out / "pretrain"
    if not (pretrained / "metrics.json").is_file():
        train(PRETRAIN + (smoke if args.smoke else []), pretrained)
    rows, results = [], {}
    for name, data_args in datasets(args.data).items():
        if args.only and name.split()[0] not in args.only:
            continue
        job = out / name.split()[0]
        m = train(data_args + FINETUNE + [f"model.checkpoint={pretrained}"] + (smoke if args.smoke else []), job)
        results[name] = m
        rows.append(row(name, m))
        print(f"{name}: done in {m['bench_wall_s']} s", file=sys.stderr)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(markdown(rows))
    print(f"jobs under {out}", file=sys.stderr)


def table_of(results: Path) -> str:
    """The markdown table again from a run's results.json (`--table DIR/results.json`)."""
    return markdown([row(name, m) for name, m in json.loads(Path(results).read_text()).items()])


if __name__ == "__main__":
    main()
