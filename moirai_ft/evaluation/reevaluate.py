"""Re-evaluation of a finished job without retraining, and its command line:

    python -m moirai_ft.evaluate <job_dir> [eval.num_samples=200 ...]

The zero-shot model is rebuilt the way run_job built it (seed_everything, prepare, load_module): the
pretrained checkpoint, or the same random initialisation for model.init=random. Nothing extra is saved
per job (a copy of large's weights would be 1.2 GB a job); instead the job records a fingerprint of the
zero-shot weights, and re-evaluation refuses a rebuilt model that differs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import lightning as L

from moirai_ft import weights
from moirai_ft.artifacts import METRICS, read_metrics, write_json_atomic
from moirai_ft.config.saved import load_job_config
from moirai_ft.config.schema import validate
from moirai_ft.data.prepare import prepare
from moirai_ft.errors import UserError
from moirai_ft.evaluation import planning
from moirai_ft.evaluation.compare import evaluate_models, selected_dir, summary_line
from moirai_ft.evaluation.forecast import fingerprint
from moirai_ft.model.load import load_module


def reevaluate(job_dir: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Rebuild the job's data and zero-shot model, load checkpoints/best, evaluate both and rewrite
    the test keys of metrics.json and forecast.png. Returns the updated metrics."""
    job_dir = Path(job_dir)
    cfg = load_job_config(job_dir, overrides)
    validate(cfg)
    selected_dir(job_dir)  # fail before the data and the model are rebuilt
    weights.check(job_dir)  # damaged since the job wrote them (moirai_ft/weights.py)
    # the order of run_job: seeding, data, then the model, so a random init comes out the same
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = prepare(cfg)
    zero_shot = load_module(cfg.model)
    metrics = read_metrics(job_dir) or {}
    expected = metrics.get("zero_shot_fingerprint")
    if expected is not None and fingerprint(zero_shot) != expected:
        raise UserError(
            f"the zero-shot model rebuilt from model.checkpoint={cfg.model.checkpoint} (init={cfg.model.init}, "
            f"seed={cfg.seed}) is not the one {job_dir} started from; point model.checkpoint at that model"
        )
    for key in ("test_error", "test_skipped", *planning.KEYS):  # an earlier evaluation's, which this one may not repeat
        metrics.pop(key, None)
    metrics.update(evaluate_models(cfg, data, zero_shot, job_dir))
    write_json_atomic(job_dir / METRICS, metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m moirai_ft.evaluate",
        description="Re-evaluate a finished job on its test windows (zero-shot vs selected model) "
        "and rewrite the test metrics in its metrics.json and forecast.png.",
    )
    parser.add_argument("job_dir", type=Path, help="the job's output directory (holds metrics.json)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. eval.num_samples=200 hardware.accelerator=cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        metrics = reevaluate(args.job_dir, args.overrides)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_line(metrics))
    return 0

