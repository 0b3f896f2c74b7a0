"""Test evaluation of a job: the zero-shot model and the selected model forecast the same test windows.

Called at the end of every job (moirai_ft/train/job.py) and as a CLI that re-evaluates a finished job
without retraining:

    python -m moirai_ft.evaluate <job_dir> [eval.num_samples=200 ...]

Forecasts are uni2ts's: `num_samples` paths sampled from the distribution MoiraiModule returns for
the horizon patches, the median (gluonts's order statistic) as point forecast. Both models draw the
same random numbers (seed `eval.seed`), so identical weights give identical metrics. Metrics
(moirai_ft/evaluation/metrics.py) on the normalised scale (mse_norm, mae_norm) and in original units (mae,
rmse, mase, wql), plus the validation NLL; metrics.json gains `test`, `zero_shot_test` and
`rel_improvement` (over the targets only when data.targets/covariates are set: the zero-shot model gets
the same covariates, and `test_without_covariates` scores the selected model asked without them), and
forecast.png shows a few windows.

The zero-shot model for re-evaluation is rebuilt the way run_job built it (seed_everything, prepare,
load_module): the pretrained checkpoint, or the same random initialisation for model.init=random.
Nothing extra is saved per job (a copy of large's weights would be 1.2 GB a job); instead the job
records a fingerprint of the zero-shot weights, and re-evaluation refuses a rebuilt model that differs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import math
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import numpy as np
import torch
from jaxtyping import Float, Int
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError
from torch import Tensor

from moirai_ft.artifacts import BEST, CHECKPOINTS, METRICS, read_metrics, write_json_atomic
from moirai_ft.config.schema import validate
from moirai_ft.data.prepare import PreparedData, prepare
from moirai_ft import weights
from moirai_ft.errors import UserError, first_line
from moirai_ft.model.families import family_of, family_of_module
from moirai_ft.model.families.moirai1 import horizon_distribution, horizon_tokens  # noqa: F401  (re-exported)
from moirai_ft.model.family import PROGRESS_MIN_BATCHES  # noqa: F401  (re-exported)
from moirai_ft.evaluation.plot import Panel, plot_forecasts
from moirai_ft.evaluation.bootstrap import item_parts, relative_improvement_interval
from moirai_ft.evaluation.coverage import band_coverages
from moirai_ft.evaluation.metrics import QUANTILE_LEVELS, forecast_metrics, rel_improvement, seasonal_errors, seasonality
from moirai_ft.evaluation import planning
from moirai_ft.model.load import load_module
from moirai_ft.data.windows import Windows, eval_batches

log = logging.getLogger(__name__)

CONFIG = "config.yaml"  # resolved config written by run_job when Hydra wrote none
HYDRA_CONFIG = Path(".hydra") / "config.yaml"
FORECAST_PNG = "forecast.png"
EVAL_ERROR_LOG = "eval_error.log"
SUMMARY_METRICS = ("mase", "wql", "mse_norm")  # the summary line's choice: scale-free, probabilistic, LSF


@dataclass
class EvalItems:
    """The evaluated series windows: one per (test window, variate)."""

    columns: Int[np.ndarray, "item"]
    starts: Int[np.ndarray, "item"]  # forecast start row in the table


# --- forecasting -------------------------------------------------------------------------------


def forecast_quantiles(
    module: torch.nn.Module,
    windows: Windows,
    batches: list[Int[Tensor, "batch"]],
    num_samples: int,
    seed: int,
    desc: str,
) -> Float[np.ndarray, "item level pred"]:
    """Quantiles (metrics.QUANTILE_LEVELS) per item, normalised scale: the module's family's forecast
    (for Moirai 1.x `num_samples` sampled paths). Runs on the module's device."""
    return family_of_module(module).forecast_quantiles(module, windows, batches, num_samples, seed, desc)


def validation_nll(module: torch.nn.Module, windows: Windows, batches: list[Int[Tensor, "batch"]]) -> float:
    """Mean validation loss of the module's family (Moirai 1.x: packed NLL), weighted as the fine-tuner's."""
    return family_of_module(module).validation_loss(module, windows, batches)


@contextlib.contextmanager
def evaluating_on(module: torch.nn.Module, device: torch.device) -> Iterator[torch.nn.Module]:
    """The module in eval mode on `device`; its device and mode are restored afterwards."""
    before, training = next(module.parameters()).device, module.training
    module.to(device).eval()
    try:
        yield module
    finally:
        module.to(before).train(training)


def eval_device(accelerator: str) -> torch.device:
    """The GPU when the job's hardware allows one and there is one. fp32 either way, as uni2ts
    evaluates: bf16 would coarsen the distribution's parameters and so the metrics."""
    if str(accelerator) != "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def fingerprint(module: torch.nn.Module) -> str:
    """A short hash of the weights: tells whether a rebuilt zero-shot model is the job's."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# --- metrics and picture -----------------------------------------------------------------------


def eval_items(windows: Windows, ids: Int[Tensor, "n"]) -> EvalItems:
    col, start = windows.locate(ids.to(windows.starts.device))
    v = windows.num_variates
    if windows.mode == "S":
        return EvalItems(col.cpu().numpy(), start.cpu().numpy())
    # mode M: each window holds every forecast column, item order (window, variate) as forecast_quantiles
    return EvalItems(np.tile(windows.forecast_columns.cpu().numpy(), len(ids)), np.repeat(start.cpu().numpy(), v))


def model_metrics(
    q_norm: Float[np.ndarray, "item level pred"], items: EvalItems, data: PreparedData, seasonal: Float[np.ndarray, "item"]
) -> dict[str, float]:
    """Normalised-scale MSE/MAE (the long-sequence-forecasting convention) and original-unit metrics."""
    rows = items.starts[:, None] + np.arange(q_norm.shape[-1])
    cols = items.columns[:, None]
    norm = forecast_metrics(data.normalized[rows, cols], q_norm)
    q_orig = q_norm * data.std[items.columns][:, None, None] + data.mean[items.columns][:, None, None]
    orig = forecast_metrics(data.table.values[rows, cols], q_orig, seasonal)
    return {
        "mse_norm": norm["mse"],
        "mae_norm": norm["mae"],
        "mae": orig["mae"],
        "rmse": orig["rmse"],
        "mase": orig["mase"],
        "wql": orig["wql"],
        # gluonts's Coverage of the central bands (moirai_ft/evaluation/coverage.py): not a loss, no rel_improvement
        **band_coverages(data.table.values[rows, cols], q_orig, QUANTILE_LEVELS),
    }


def split_scorer(data: PreparedData, items: EvalItems, pred: int) -> planning.Scorer:
    """The normalised targets of these items and model_metrics on them (seasonal errors over each item's past)."""
    rows = items.starts[:, None] + np.arange(pred)
    seasonal = seasonal_errors(data.table.values, items.columns, items.starts, seasonality(data.table.freq))
    return planning.Scorer(data.normalized[rows, items.columns[:, None]],
                           lambda q: model_metrics(q, items, data, seasonal))


def improvement_intervals(
    quantiles: dict[str, Float[np.ndarray, "item level pred"]], items: EvalItems, data: PreparedData,
    seasonal: Float[np.ndarray, "item"], windows: int, seed: int,
) -> dict[str, list[float] | None]:
    """Per test metric, the 95% paired bootstrap interval of the relative improvement over zero-shot,
    resampling test windows (moirai_ft/evaluation/bootstrap.py); the names of model_metrics."""
    rows = items.starts[:, None] + np.arange(quantiles["zero-shot"].shape[-1])
    cols = items.columns[:, None]
    groups = np.repeat(np.arange(windows), len(items.starts) // max(windows, 1))  # mode M: a window's variates together
    scale = lambda q: q * data.std[items.columns][:, None, None] + data.mean[items.columns][:, None, None]  # noqa: E731
    norm = [item_parts(data.normalized[rows, cols], quantiles[k]) for k in ("fine-tuned", "zero-shot")]
    orig = [item_parts(data.table.values[rows, cols], scale(quantiles[k]), seasonal) for k in ("fine-tuned", "zero-shot")]
    on_norm = relative_improvement_interval(*norm, groups=groups, seed=seed, names=("mse", "mae"))
    on_orig = relative_improvement_interval(*orig, groups=groups, seed=seed, names=("mae", "rmse", "mase", "wql"))
    return {"mse_norm": on_norm["mse"], "mae_norm": on_norm["mae"], **on_orig}


def forecast_panels(
    data: PreparedData, items: EvalItems, forecasts: dict[str, Float[np.ndarray, "item level pred"]], count: int
) -> list[Panel]:
    """`count` evenly spaced items, in original units."""
    if count <= 0 or len(items.starts) == 0:
        return []
    picks = np.unique(np.linspace(0, len(items.starts) - 1, count).round().astype(int))
    ctx, pred = data.spec.context_length, data.spec.prediction_length
    index, values = data.table.index, data.table.values
    panels = []
    for i in picks:
        c, f = int(items.columns[i]), int(items.starts[i])
        to_orig = lambda q: q * data.std[c] + data.mean[c]  # noqa: E731
        panels.append(
            Panel(
                title=f"{data.table.columns[c]}, forecast from {index[f]}",
                context_time=index[f - ctx : f],
                context=values[f - ctx : f, c],
                horizon_time=index[f : f + pred],
                truth=values[f : f + pred, c],
                forecasts={label: to_orig(q[i]) for label, q in forecasts.items()},
            )
        )
    return panels


# --- the job's evaluation ----------------------------------------------------------------------


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
) -> dict[str, Any]:
    """The zero-shot model and the job's selected model (loaded from checkpoints/best, so a job and its
    re-evaluation score the same thing the same way) on the same test windows. Returns the metrics.json
    keys and writes forecast.png.

    `val_nll`: (selected, zero-shot) validation NLL when the training already measured them on the
    same windows; a None is measured here (re-evaluation, where the test checks both agree)."""
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
    for label, module in (("zero-shot", zero_shot), ("fine-tuned", selected)):
        with evaluating_on(module, device):
            quantiles[label] = forecast_quantiles(
                module, data.test, batches, cfg.eval.num_samples, cfg.eval.seed, desc=f"test {label}"
            )
            nll = known[label]
            results[label] = {
                **model_metrics(quantiles[label], items, data, seasonal),
                "val_nll": float(nll) if nll is not None else validation_nll(module, data.val, val_batches),
            }
    planned: dict[str, Any] = {}
    if planning.wanted(cfg):  # blend=true, calibrate=conformal: both models forecast the validation windows too
        val_ids = torch.cat(val_batches)
        val_q = {}
        for label, module in (("zero-shot", zero_shot), ("fine-tuned", selected)):
            with evaluating_on(module, device):
                val_q[label] = forecast_quantiles(module, data.val, val_batches, cfg.eval.num_samples, cfg.eval.seed,
                                                  desc=f"validation {label}")
        pred = quantiles["zero-shot"].shape[-1]

        def intervals(candidate: np.ndarray, baseline: np.ndarray) -> dict[str, list[float] | None]:
            pair = {"fine-tuned": candidate, "zero-shot": baseline}  # improvement_intervals's roles
            return improvement_intervals(pair, items, data, seasonal, len(ids), cfg.eval.seed)

        planned = planning.plan_forecasts(
            cfg, split_scorer(data, eval_items(data.val, val_ids), pred), split_scorer(data, items, pred), val_q,
            quantiles, results, intervals, job_dir)
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
        "zero_shot_fingerprint": fingerprint(zero_shot),
    }


def evaluate_job(
    cfg: DictConfig,
    data: PreparedData,
    zero_shot: torch.nn.Module,
    job_dir: Path,
    val_nll: tuple[float | None, float | None] = (None, None),
) -> dict[str, Any]:
    """evaluate_models for run_job: a failing evaluation does not undo a finished training. The job keeps
    its checkpoints and metrics, gains `test_error` (traceback in eval_error.log), and can be
    re-evaluated with `python -m moirai_ft.evaluate <job_dir>`."""
    try:
        return evaluate_models(cfg, data, zero_shot, Path(job_dir), val_nll)
    except Exception as e:  # noqa: BLE001 - recorded, training result kept
        (Path(job_dir) / EVAL_ERROR_LOG).write_text(traceback.format_exc())
        first = first_line(e)
        log.error("test evaluation failed (%s: %s); see %s", type(e).__name__, first, EVAL_ERROR_LOG)
        return {"test_error": f"{type(e).__name__}: {first}"}


def summary_line(metrics: dict[str, Any]) -> str:
    """One line for the end of a job: the selected model's test metrics against zero-shot."""
    test, zero, rel = metrics.get("test"), metrics.get("zero_shot_test"), metrics.get("rel_improvement")
    if not test or not zero or not rel:
        return f"test: no evaluation ({metrics.get('test_error', 'not run')})"

    def num(x: float | None) -> str:
        return "nan" if x is None or not math.isfinite(x) else f"{x:.4g}"

    def pct(x: float | None) -> str:
        return "n/a" if x is None or not math.isfinite(x) else f"{x:+.1%}"

    parts = [f"{k} {num(test.get(k))} vs zero-shot {num(zero.get(k))} ({pct(rel.get(k))})" for k in SUMMARY_METRICS]
    n = metrics.get("test_eval", {}).get("series_windows", "?")
    return f"test ({n} windows): " + ", ".join(parts) + f"; finetune_helped={metrics.get('finetune_helped')}"


# --- re-evaluation of a finished job -----------------------------------------------------------


def save_config(cfg: DictConfig, job_dir: Path) -> None:
    """Write the resolved config to <job_dir>/config.yaml unless Hydra already wrote .hydra/config.yaml,
    so a job run in-process can be re-evaluated too."""
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    if not (job_dir / HYDRA_CONFIG).is_file() and not (job_dir / CONFIG).is_file():
        (job_dir / CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))


def load_job_config(job_dir: Path, overrides: list[str] | None = None) -> DictConfig:
    job_dir = Path(job_dir)
    path = next((p for p in (job_dir / CONFIG, job_dir / HYDRA_CONFIG) if p.is_file()), None)
    if path is None:
        raise UserError(f"{job_dir} has no {CONFIG} or {HYDRA_CONFIG}; pass the directory of a job run by train.py")
    cfg = OmegaConf.load(path)
    OmegaConf.set_struct(cfg, True)  # an override naming an unknown key is an error, not a new key
    try:
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides or [])))
    except ConfigKeyError as e:
        raise UserError(f"unknown config key in {overrides}: {first_line(e)}; use keys of {path}") from e


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
    metrics.update(evaluate_models(cfg, data, zero_shot, job_dir))
    metrics.pop("test_error", None)
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


if __name__ == "__main__":
    sys.exit(main())
