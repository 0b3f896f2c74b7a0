"""Test evaluation of a job: the zero-shot model and the selected model forecast the same test windows.

Called at the end of every job (moirai_ft/train/outcome.py); a finished job is re-evaluated without
retraining by moirai_ft/evaluation/reevaluate.py (`python -m moirai_ft.evaluate <job_dir>`).

Forecasts are uni2ts's: `num_samples` paths sampled from the distribution MoiraiModule returns for
the horizon patches, the median (gluonts's order statistic) as point forecast. Both models draw the
same random numbers (seed `eval.seed`), so identical weights give identical metrics. Metrics
(moirai_ft/evaluation/metrics.py) on the normalised scale (mse_norm, mae_norm) and in original units (mae,
rmse, mase, wql), plus the validation NLL; metrics.json gains `test`, `zero_shot_test` and
`rel_improvement` (over the targets only when data.targets/covariates are set: the zero-shot model gets
the same covariates, and `test_without_covariates` scores the selected model asked without them), and
forecast.png shows a few windows.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from moirai_ft.artifacts import BEST, CHECKPOINTS
from moirai_ft.data.prepare import PreparedData
from moirai_ft.data.windows import eval_batches
from moirai_ft.errors import UserError, first_line
from moirai_ft.evaluation import planning
from moirai_ft.evaluation.forecast import eval_device, evaluating_on, fingerprint, forecast_quantiles, validation_nll
from moirai_ft.evaluation.metrics import rel_improvement, seasonal_errors, seasonality
from moirai_ft.evaluation.plot import forecast_panels, plot_forecasts
from moirai_ft.evaluation.scoring import eval_items, improvement_intervals, model_metrics
from moirai_ft.evaluation.zero_shot import SharedZeroShot
from moirai_ft.model.families import family_of

log = logging.getLogger(__name__)

FORECAST_PNG = "forecast.png"
EVAL_ERROR_LOG = "eval_error.log"
SUMMARY_METRICS = ("mase", "wql", "mse_norm")  # the summary line's choice: scale-free, probabilistic, LSF


def selected_dir(job_dir: Path) -> Path:
    """The job's result as the user gets it: checkpoints/best, written by BestWeights."""
    best_dir = Path(job_dir) / CHECKPOINTS / BEST
    if not (best_dir / "model.safetensors").is_file():
        raise UserError(f"{best_dir} holds no selected weights; the job did not finish its first validation")
    return best_dir


def evaluate_models(
    cfg: DictConfig,
    data: PreparedData,
    zero_shot: torch.nn.Module,
    job_dir: Path,
    val_nll: tuple[float | None, float | None] = (None, None),
    shared: SharedZeroShot | None = None,
) -> dict[str, Any]:
    """The zero-shot model and the job's selected model (loaded from checkpoints/best, so a job and its
    re-evaluation score the same thing the same way) on the same test windows. Returns the metrics.json
    keys and writes forecast.png.

    `val_nll`: (selected, zero-shot) validation NLL when the training already measured them on the
    same windows; a None is measured here (re-evaluation, where the test checks both agree). `shared`: the
    sweep's zero-shot entries, where the zero-shot model's part is read when another job computed it."""
    started = time.perf_counter()
    try:
        selected = family_of(cfg.model).from_pretrained(selected_dir(job_dir))
    except Exception as e:  # noqa: BLE001 - a file cut short or overwritten: one line, not a traceback
        raise UserError(
            f"{selected_dir(job_dir)} could not be loaded ({type(e).__name__}: {first_line(e, 200)}); "
            "the weights are damaged: retrain the job"
        ) from e
    device = eval_device(cfg.hardware.accelerator)
    batches = eval_batches(len(data.test), cfg.eval.batch_size, cfg.eval.max_windows)
    val_batches = eval_batches(len(data.val), cfg.batch_size, cfg.val_max_windows)  # the job's validation set
    ids = torch.cat(batches)
    items = eval_items(data.test, ids)
    m = seasonality(data.table.freq)
    seasonal = seasonal_errors(data.table.values, items.columns, items.starts, m)
    log.info(
        "test evaluation: %d windows x %d samples on %s, zero-shot and selected model",
        len(ids), cfg.eval.num_samples, device,
    )
    results: dict[str, dict[str, float]] = {}
    quantiles: dict[str, np.ndarray] = {}
    known = {"fine-tuned": val_nll[0], "zero-shot": val_nll[1]}

    def score(label: str, module: torch.nn.Module) -> tuple[np.ndarray, dict[str, float]]:
        with evaluating_on(module, device):
            q = forecast_quantiles(module, data.test, batches, cfg.eval.num_samples, cfg.eval.seed, desc=f"test {label}")
            nll = known[label]
            return q, {
                **model_metrics(q, items, data, seasonal),
                "val_nll": float(nll) if nll is not None else validation_nll(module, data.val, val_batches),
            }

    quantiles["zero-shot"], results["zero-shot"] = (
        shared.test(cfg, lambda: score("zero-shot", zero_shot)) if shared is not None else score("zero-shot", zero_shot))
    quantiles["fine-tuned"], results["fine-tuned"] = score("fine-tuned", selected)
    # blend=true, calibrate=conformal: fitted on both models' validation forecasts (moirai_ft/evaluation/planning.py)
    planned = planning.evaluate_plans(cfg, data, {"zero-shot": zero_shot, "fine-tuned": selected}, device, val_batches,
                                      quantiles, results, items, seasonal, len(ids), job_dir, shared)
    without: dict[str, Any] = {}
    if data.test.has_covariates:  # a third row: did the covariates help the fine-tuned model?
        with evaluating_on(selected, device):
            q = forecast_quantiles(selected, data.test.without_covariates(), batches, cfg.eval.num_samples,
                                   cfg.eval.seed, desc="test fine-tuned without covariates")
        without["test_without_covariates"] = model_metrics(q, items, data, seasonal)
    panels = forecast_panels(data, items, quantiles, cfg.eval.plot_windows)
    if panels:
        plot_forecasts(panels, job_dir / FORECAST_PNG)
    return {
        "test": results["fine-tuned"],
        "zero_shot_test": results["zero-shot"],
        "rel_improvement": rel_improvement(results["fine-tuned"], results["zero-shot"]),
        # 95% paired bootstrap interval of each rel_improvement, over test windows (seed eval.seed)
        "rel_improvement_ci": improvement_intervals(quantiles, items, data, seasonal, len(ids), cfg.eval.seed),
        **planned,
        **without,
        "test_eval": {
            "windows": len(ids),
            "series_windows": len(items.starts),
            "num_samples": cfg.eval.num_samples,
            "seed": cfg.eval.seed,
            "seasonality": m,
            "device": str(device),
            "wall_s": round(time.perf_counter() - started, 3),
        },
        "zero_shot_fingerprint": shared.weights if shared is not None else fingerprint(zero_shot),
    }


def evaluate_job(
    cfg: DictConfig,
    data: PreparedData,
    zero_shot: torch.nn.Module,
    job_dir: Path,
    val_nll: tuple[float | None, float | None] = (None, None),
    shared: SharedZeroShot | None = None,
) -> dict[str, Any]:
    """evaluate_models for run_job: a failing evaluation does not undo a finished training. The job keeps
    its checkpoints and metrics, gains `test_error` (traceback in eval_error.log), and can be
    re-evaluated with `python -m moirai_ft.evaluate <job_dir>`."""
    try:
        return evaluate_models(cfg, data, zero_shot, Path(job_dir), val_nll, shared)
    except Exception as e:  # noqa: BLE001 - recorded, training result kept
        (Path(job_dir) / EVAL_ERROR_LOG).write_text(traceback.format_exc())
        first = first_line(e)
        log.error("test evaluation failed (%s: %s); see %s", type(e).__name__, first, EVAL_ERROR_LOG)
        return {"test_error": f"{type(e).__name__}: {first}"}


def summary_line(metrics: dict[str, Any]) -> str:
    """One line for the end of a job: the selected model's test metrics against zero-shot."""
    test, zero, rel = metrics.get("test"), metrics.get("zero_shot_test"), metrics.get("rel_improvement")
    if not test or not zero or not rel:
        return f"test: no evaluation ({metrics.get('test_error') or metrics.get('test_skipped') or 'not run'})"

    def num(x: float | None) -> str:
        return "nan" if x is None or not math.isfinite(x) else f"{x:.4g}"

    def pct(x: float | None) -> str:
        return "n/a" if x is None or not math.isfinite(x) else f"{x:+.1%}"

    parts = [f"{k} {num(test.get(k))} vs zero-shot {num(zero.get(k))} ({pct(rel.get(k))})" for k in SUMMARY_METRICS]
    n = metrics.get("test_eval", {}).get("series_windows", "?")
    line = f"test ({n} windows): " + ", ".join(parts) + f"; finetune_helped={metrics.get('finetune_helped')}"
    return "; ".join([line, *planning.summary_parts(metrics)])
