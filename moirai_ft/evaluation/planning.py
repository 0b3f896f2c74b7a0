"""The forecasts a job offers beyond its selected model, fitted on the validation windows and scored on the
test windows: the blend with the zero-shot model (blend=true, moirai_ft/evaluation/blend.py) and
conformally calibrated bands (calibrate=conformal, moirai_ft/evaluation/calibration.py).

Both models forecast the validation windows of the job's validation set with the test's settings
(eval.num_samples, eval.seed): the blend's weight is chosen there and the calibration fitted there, and
the quantiles of the same number of sampled paths as the test's are what gets corrected. metrics.json gains:
- blend=true: `blend_weight`, `blend_validation` (the metric and every grid weight's score), `test_blend`,
  `blend_rel_improvement` and `blend_ci` (the paired bootstrap interval of the blend against each part);
- calibrate=conformal: `test_calibrated` (the selected model's calibrated forecast; `test_blend_calibrated`
  too with the blend) and `calibration` (test coverage and WQL before and after, validation coverage before
  and after); calibration.json holds the offsets (one fit per forecast) for the forecaster.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from omegaconf import DictConfig, OmegaConf

from moirai_ft.data.prepare import PreparedData
from moirai_ft.evaluation import calibration
from moirai_ft.evaluation.blend import FALLBACK_METRIC, blend, choose_weight
from moirai_ft.evaluation.calibration import METHOD, Calibration, fit_conformal
from moirai_ft.evaluation.coverage import band_coverages
from moirai_ft.evaluation.forecast import evaluating_on, forecast_quantiles
from moirai_ft.evaluation.metrics import rel_improvement, seasonal_errors, seasonality
from moirai_ft.evaluation.zero_shot import VALIDATION_FORECAST, SharedZeroShot
from moirai_ft.evaluation.scoring import EvalItems, eval_items, improvement_intervals, model_metrics
from moirai_ft.config.presets import monitored_metric
from moirai_ft.scores import QUANTILE_LEVELS
from moirai_ft.values import plain

log = logging.getLogger(__name__)

Quantiles = Float[np.ndarray, "item level pred"]
FINETUNED, ZERO_SHOT, BLEND = "fine-tuned", "zero-shot", "blend"
# what plan_forecasts may add to metrics.json: re-evaluation without an option drops its earlier keys
KEYS = ("blend_weight", "blend_validation", "test_blend", "blend_rel_improvement", "blend_ci", "test_calibrated",
        "test_blend_calibrated", "calibration")


@dataclass
class Scorer:
    """One split's evaluated items: their targets on the normalised scale, and the job's test metrics
    (evaluate.model_metrics) of a normalised forecast of them."""

    label_norm: Float[np.ndarray, "item pred"]
    metrics: Callable[[Quantiles], dict[str, float]]


def scorer(data: PreparedData, items: EvalItems, pred: int,
           seasonal: Float[np.ndarray, "item"] | None = None) -> Scorer:
    """The normalised targets of these items, and model_metrics on them (seasonal errors over each item's past)."""
    rows = items.starts[:, None] + np.arange(pred)
    if seasonal is None:
        seasonal = seasonal_errors(data.table.values, items.columns, items.starts, seasonality(data.table.freq))
    return Scorer(data.normalized[rows, items.columns[:, None]], lambda q: model_metrics(q, items, data, seasonal))


def calibrate_on(cfg: DictConfig) -> bool:
    """calibrate=conformal (a job from before the key existed has none)."""
    value = OmegaConf.select(cfg, "calibrate", default="none")
    return str(plain(value)) == METHOD


def blend_on(cfg: DictConfig) -> bool:
    return bool(OmegaConf.select(cfg, "blend", default=False))


def wanted(cfg: DictConfig) -> bool:
    """Whether the job needs validation forecasts of both models."""
    return calibrate_on(cfg) or blend_on(cfg)


def blend_metric(cfg: DictConfig) -> str:
    """The test metric the blend's weight minimises on validation: the monitor's (val_crps: wql, val_mae:
    mae); val_nll has no value for an average of quantiles, so WQL."""
    return monitored_metric(plain(cfg.monitor), cfg.get("monitors")) or FALLBACK_METRIC


def summary_parts(metrics: dict[str, Any]) -> list[str]:
    """For the job's last line: the 80% band's coverage, and the blend's and the calibration's effect."""
    def share(x: Any) -> str:
        return f"{x:.1%}" if isinstance(x, (int, float)) and np.isfinite(x) else "n/a"

    test, zero = metrics.get("test") or {}, metrics.get("zero_shot_test") or {}
    parts = []
    if "coverage_80" in test:
        parts.append(f"80% band holds {share(test['coverage_80'])} (zero-shot {share(zero.get('coverage_80'))})")
    cal = metrics.get("test_calibrated") or {}
    if "coverage_80" in cal:
        parts.append(f"{share(cal.get('coverage_80'))} calibrated")
    if "blend_weight" in metrics:
        metric = (metrics.get("blend_validation") or {}).get("metric", "wql")
        value = (metrics.get("test_blend") or {}).get(metric)
        parts.append(f"blend w={metrics['blend_weight']:g} {metric} "
                     + (f"{value:.4g}" if isinstance(value, (int, float)) else "n/a"))
    return parts


def plan_forecasts(
    cfg: DictConfig,
    val: Scorer,
    test: Scorer,
    val_q: dict[str, Quantiles],
    test_q: dict[str, Quantiles],
    tested: dict[str, dict[str, float]],
    intervals: Callable[[Quantiles, Quantiles], dict[str, list[float] | None]],
    job_dir: Path,
) -> dict[str, Any]:
    """The metrics.json keys of the blend and the calibration. `val_q`/`test_q`: each model's normalised
    quantiles ("fine-tuned", "zero-shot"); `tested`: their test metrics; `intervals(candidate, baseline)`:
    per metric, the paired bootstrap interval of the candidate's relative improvement on the test windows.
    Writes calibration.json (removes a stale one when calibration is off)."""
    out: dict[str, Any] = {}
    val_q, test_q = dict(val_q), dict(test_q)
    if blend_on(cfg):
        metric = blend_metric(cfg)
        weight, scores = choose_weight(val_q[FINETUNED], val_q[ZERO_SHOT], lambda q: val.metrics(q)[metric],
                                       [float(w) for w in cfg.blend_grid])
        val_q[BLEND] = blend(val_q[FINETUNED], val_q[ZERO_SHOT], weight)
        test_q[BLEND] = blend(test_q[FINETUNED], test_q[ZERO_SHOT], weight)
        blended = test.metrics(test_q[BLEND])
        out.update(
            blend_weight=weight,
            blend_validation={"metric": metric, "scores": scores},
            test_blend=blended,
            # over the blend's metrics (a quantile average has no validation NLL)
            blend_rel_improvement={part: rel_improvement(blended, {k: v for k, v in tested[name].items() if k in blended})
                                   for part, name in (("vs_fine_tuned", FINETUNED), ("vs_zero_shot", ZERO_SHOT))},
            blend_ci={"vs_fine_tuned": intervals(test_q[BLEND], test_q[FINETUNED]),
                      "vs_zero_shot": intervals(test_q[BLEND], test_q[ZERO_SHOT])},
        )
        log.info("blend: w=%g (validation %s %s)", weight, metric, scores)
    if not calibrate_on(cfg):
        (Path(job_dir) / calibration.CALIBRATION).unlink(missing_ok=True)
        return out
    fits: dict[str, Calibration] = {}
    summary: dict[str, Any] = {"method": METHOD, "residuals_per_step": None}
    for name, key in ((FINETUNED, "test_calibrated"), (BLEND, "test_blend_calibrated")):
        if name not in val_q:
            continue
        fit = fits[name] = fit_conformal(val.label_norm, val_q[name], QUANTILE_LEVELS)
        after = test.metrics(fit.apply(test_q[name]))
        before = tested[FINETUNED] if name == FINETUNED else out["test_blend"]
        out[key] = after
        val_before = band_coverages(val.label_norm, val_q[name], QUANTILE_LEVELS)
        val_after = band_coverages(val.label_norm, fit.apply(val_q[name]), QUANTILE_LEVELS)
        summary["residuals_per_step"] = fit.count
        summary[name] = {
            "test": {f"{m}_{when}": value for m in ("coverage_80", "coverage_50", "wql")
                     for when, value in (("before", before.get(m)), ("after", after.get(m))) if m in after},
            "validation": {f"{m}_{when}": cov[m] for m in val_before for when, cov in
                           (("before", val_before), ("after", val_after))},
        }
    calibration.save(fits, job_dir)
    summary["file"] = calibration.CALIBRATION
    out["calibration"] = summary
    return out


def evaluate_plans(
    cfg: DictConfig, data: PreparedData, modules: dict[str, torch.nn.Module], device: torch.device,
    val_batches: list[torch.Tensor], test_q: dict[str, Quantiles], tested: dict[str, dict[str, float]],
    items: EvalItems, seasonal: Float[np.ndarray, "item"], windows: int, job_dir: Path,
    shared: SharedZeroShot | None = None,
) -> dict[str, Any]:
    """plan_forecasts for the job's evaluation (evaluate.evaluate_models): both models ("zero-shot",
    "fine-tuned") forecast the validation windows, then the blend and the calibration are fitted there and
    scored on the test items. {} when neither option is on (a stale calibration.json is removed). `shared`:
    the sweep's zero-shot entries (moirai_ft/evaluation/zero_shot.py): the zero-shot model's validation
    forecast is read there when another job of the sweep computed it."""
    if not wanted(cfg):
        (Path(job_dir) / calibration.CALIBRATION).unlink(missing_ok=True)  # from an earlier evaluation
        return {}
    def forecast(name: str) -> Quantiles:
        with evaluating_on(modules[name], device):
            return forecast_quantiles(modules[name], data.val, val_batches, cfg.eval.num_samples, cfg.eval.seed,
                                      desc=f"validation {name}")

    val_q = {name: forecast(name) for name in modules if name != ZERO_SHOT or shared is None}
    if shared is not None:
        val_q[ZERO_SHOT] = shared.quantiles(VALIDATION_FORECAST, cfg, lambda: forecast(ZERO_SHOT))
    pred = test_q[ZERO_SHOT].shape[-1]

    def intervals(candidate: Quantiles, baseline: Quantiles) -> dict[str, list[float] | None]:
        pair = {FINETUNED: candidate, ZERO_SHOT: baseline}  # improvement_intervals's roles: candidate vs baseline
        return improvement_intervals(pair, items, data, seasonal, windows, cfg.eval.seed)

    val_items = eval_items(data.val, torch.cat(val_batches))
    return plan_forecasts(cfg, scorer(data, val_items, pred), scorer(data, items, pred, seasonal), val_q, test_q,
                          tested, intervals, job_dir)
