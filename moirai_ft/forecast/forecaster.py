"""`moirai_ft.Forecaster`: a finished job's model, loaded once, forecasting any number of frames.

    from moirai_ft import Forecaster
    forecaster = Forecaster.from_job("multirun/2026-12-01/14-17-46")   # a job, or a sweep: its best job
    forecasts = forecaster.predict(df)                                  # the rows of forecasts.csv
    forecasts = forecaster.predict(df, future=weather_forecast)         # known covariates over the horizon

The forecast is the job's family's own (moirai_ft/model/family.py `forecast`): Moirai 1.x draws
eval.num_samples paths from its horizon distribution as MoiraiForecast does, Moirai-MoE runs
MoiraiMoEForecast, Moirai 2.0 runs Moirai2Forecast (its quantiles). Inputs are laid out as the forecast
class lays them out at inference (CovariateWindows), scaled with the job's train statistics, and the
quantiles go back to the targets' original units. A LoRA job's checkpoints/best holds merged weights: a
plain module of its family.

`predict(..., blend=True)` forecasts with the job's blend (a blend=true job: w x fine-tuned + (1 - w) x
zero-shot, quantile by quantile, w from its metrics.json; the zero-shot model is rebuilt and checked as
for zero_shot=True). A job run with calibrate=conformal has calibration.json: `postprocess` applies its fit
for the forecast asked for (fine-tuned or blend) unless `calibrated=False`; the zero-shot model's forecast
is never calibrated (the job fitted none for it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import nn

from moirai_ft import weights
from moirai_ft.data.covariate_windows import CovariateWindows
from moirai_ft.data.windows import WindowSpec, eval_batches
from moirai_ft.errors import UserError, first_line
from moirai_ft.evaluation import calibration
from moirai_ft.evaluation.blend import blend as blend_quantiles, recorded_weight
from moirai_ft.evaluation.forecast import eval_device, fingerprint
from moirai_ft.evaluation.scoring import EvalItems, model_metrics
from moirai_ft.evaluation.metrics import seasonal_errors, seasonality
from moirai_ft.scores import QUANTILE_LEVELS
from moirai_ft.forecast.inputs import ForecastInput, prepare_input
from moirai_ft.forecast.job import ForecastJob, open_job, resolve
from moirai_ft.model.families import family_of
from moirai_ft.model.load import load_module

log = logging.getLogger(__name__)

ITEM, TIMESTAMP, MEAN = "item", "timestamp", "mean"
LEVEL_COLUMNS = tuple(f"{q:g}" for q in QUANTILE_LEVELS)  # "0.1" ... "0.9"


@dataclass
class Forecast:
    """One forecast of every target: quantiles (and the paths' mean, where the family samples paths) in the
    targets' original units, the input it came from, and the backtest metrics when the data held the truth."""

    items: list[str]
    quantiles: Float[np.ndarray, "item level pred"]
    mean: Float[np.ndarray, "item pred"] | None
    input: ForecastInput
    label: str  # fine-tuned | zero-shot | blend w=<w>, then " calibrated" where the bands were
    metrics: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        """Long format, one row per (item, timestamp): item, timestamp, mean (where there is one), 0.1 ... 0.9."""
        n, pred = len(self.items), len(self.input.horizon_time)
        columns: dict[str, Any] = {
            ITEM: np.repeat(self.items, pred),
            TIMESTAMP: np.tile(self.input.horizon_time, n),
        }
        if self.mean is not None:
            columns[MEAN] = self.mean.reshape(-1)
        for i, name in enumerate(LEVEL_COLUMNS):
            columns[name] = self.quantiles[:, i].reshape(-1)
        frame = pd.DataFrame(columns)
        frame.attrs.update(notes=list(self.notes), metrics=self.metrics)
        return frame


class Forecaster:
    """A job's selected model (or, zero_shot=True, the model it started from), with the job's data options,
    window lengths, column roles and train statistics."""

    def __init__(self, job: ForecastJob, zero_shot: bool = False, data: dict[str, Any] | None = None,
                 device: str | torch.device | None = None):
        self.job = job
        self.zero_shot = zero_shot
        self.data = dict(data or {})  # data.* options over the job's own
        cfg = job.config
        self.device = torch.device(device) if device not in (None, "auto") else eval_device(cfg.hardware.accelerator)
        self.family = family_of(cfg.model)
        self.spec = WindowSpec(int(cfg.context_length), int(cfg.prediction_length), int(cfg.patch_size),
                               max(cfg.model.patch_sizes))
        self.module: nn.Module | None = None
        self._partner: Forecaster | None = None  # the job's zero-shot model, for the blend

    @classmethod
    def from_job(cls, path: str | Path, *, rank_by: str = "best_monitored", zero_shot: bool = False,
                 data: dict[str, Any] | None = None, device: str | torch.device | None = None,
                 load: bool = True) -> "Forecaster":
        """The forecaster of a job directory, or of the job analyze ranks first (by `rank_by`) in a sweep."""
        job_dir, _ = resolve(path, rank_by)
        forecaster = cls(open_job(job_dir), zero_shot=zero_shot, data=data, device=device)
        return forecaster.load() if load else forecaster

    @property
    def mode(self) -> str:
        """S: one sample per target; M: every target in one sample (the job's data.mode unless data= says)."""
        return str(getattr(m := self.data.get("mode", self.job.config.data.mode), "value", m))

    @property
    def label(self) -> str:
        return "zero-shot" if self.zero_shot else "fine-tuned"

    # --- the model ---------------------------------------------------------------------------
    def load(self) -> "Forecaster":
        """Load the weights (once)."""
        if self.module is None:
            module = self._zero_shot() if self.zero_shot else self._selected()
            self.module = module.to(self.device).eval()
        return self

    def _selected(self) -> nn.Module:
        best = weights.best_dir(self.job.path)
        try:
            return self.family.from_pretrained(best)
        except Exception as e:  # noqa: BLE001 - a file cut short or overwritten: one line, not a traceback
            raise UserError(f"{best} could not be loaded ({type(e).__name__}: {first_line(e, 200)}); "
                            "the weights are damaged: retrain the job") from e

    def _zero_shot(self) -> nn.Module:
        """The job's starting model, rebuilt as run_job built it (a random init from the job's seed), and
        refused unless it is the one the job recorded."""
        cfg = self.job.config
        with torch.random.fork_rng():
            torch.manual_seed(int(cfg.seed))
            module = load_module(cfg.model)
        expected = self.job.metrics.get("zero_shot_fingerprint")
        if expected is not None and fingerprint(module) != expected:
            raise UserError(f"the zero-shot model rebuilt from model.checkpoint={cfg.model.checkpoint} is not the one "
                            f"{self.job.path} started from; make model.checkpoint point at that model again")
        return module

    # --- forecasting -------------------------------------------------------------------------
    def inputs(self, df: pd.DataFrame | None = None, future: pd.DataFrame | str | Path | None = None,
               backtest: str | None = None) -> ForecastInput:
        """What the model is asked, checked before it is needed (moirai_ft/forecast/inputs.py)."""
        return prepare_input(self.job, self.data, df, future, backtest)

    def predict(self, df: pd.DataFrame | None = None, future: pd.DataFrame | str | Path | None = None,
                backtest: str | None = None, blend: bool = False, calibrated: bool = True) -> pd.DataFrame:
        """Forecasts of every target after the targets' last value (or from `backtest`), long format:
        item, timestamp, mean (sampling families), 0.1 ... 0.9, in original units. `.attrs` holds the
        notes (a padded context, say) and, for a backtest with the truth in `df`, the metrics.
        `blend=True`: the job's fine-tuned/zero-shot blend (a job run with blend=true); `calibrated`: the job's
        conformal calibration applied where it has one (calibrate=conformal)."""
        return self.forecast(self.inputs(df, future, backtest), blend=blend, calibrated=calibrated).frame()

    def forecast(self, inp: ForecastInput, blend: bool = False, calibrated: bool = True) -> Forecast:
        if blend and self.zero_shot:
            raise UserError("blend=True blends the job's fine-tuned model with its zero-shot one; drop zero_shot=True")
        weight = recorded_weight(self.job.metrics, self.job.path) if blend else None  # before any model loads
        job = self.job
        normalized = (inp.values - job.mean) / job.std  # float32, as the job normalised its table
        index = {c: i for i, c in enumerate(inp.columns)}
        rows = [torch.tensor([index[c] for c in names], dtype=torch.long) for names in (job.targets, job.known, job.past)]
        windows = CovariateWindows(torch.from_numpy(np.ascontiguousarray(normalized.T)),
                                   torch.tensor([self.spec.context_length]), self.spec, self.mode, *rows,
                                   pad=inp.pad)
        q_norm, mean_norm = self.model_forecast(windows)
        label = self.label
        if weight is not None:  # both models on the same windows with the same seed, as the job's evaluation
            q_zero, mean_zero = self.partner().model_forecast(windows)
            q_norm = blend_quantiles(q_norm, q_zero, weight)
            mean_norm = None if mean_norm is None or mean_zero is None else blend_quantiles(mean_norm, mean_zero, weight)
            label = f"blend w={weight:g}"
        notes = list(inp.notes)
        q_norm, mean_norm = self.postprocess(q_norm, mean_norm, inp)
        fit = self.calibration("blend" if blend else "fine-tuned") if calibrated else None
        if fit is not None:
            q_norm = fit.apply(q_norm)
            label += " calibrated"
            notes.append(f"bands calibrated (conformal, {calibration.CALIBRATION}: fitted on the job's validation "
                         "windows; the mean column is the model's own)")
        targets = [index[c] for c in job.targets]
        loc, scale = job.mean[targets], job.std[targets]
        return Forecast(
            items=list(job.targets),
            quantiles=q_norm * scale[:, None, None] + loc[:, None, None],
            mean=None if mean_norm is None else mean_norm * scale[:, None] + loc[:, None],
            input=inp,
            label=label,
            metrics=self.backtest_metrics(q_norm, inp) if inp.has_truth else None,
            notes=notes,
        )

    def model_forecast(self, windows: CovariateWindows) -> tuple[np.ndarray, np.ndarray | None]:
        """This forecaster's model on the windows: normalised quantiles and, for sampling families, the mean."""
        self.load()
        cfg = self.job.config
        batches = eval_batches(len(windows), int(cfg.eval.batch_size))
        return self.family.forecast(self.module, windows, batches, int(cfg.eval.num_samples), int(cfg.eval.seed),
                                    desc="forecast")

    def partner(self) -> "Forecaster":
        """The job's zero-shot model (for the blend), loaded once."""
        if self._partner is None:
            self._partner = Forecaster(self.job, zero_shot=True, data=self.data, device=self.device)
        return self._partner

    def calibration(self, name: str) -> calibration.Calibration | None:
        """The job's conformal fit for the forecast `name` (fine-tuned | blend); None for the zero-shot model
        or a job without calibrate=conformal."""
        fits = None if self.zero_shot else calibration.load(self.job.path)
        return (fits or {}).get(name)

    def postprocess(self, q_norm: Float[np.ndarray, "item level pred"], mean_norm: Float[np.ndarray, "item pred"] | None,
                    inp: ForecastInput) -> tuple[np.ndarray, np.ndarray | None]:
        """A hook on the quantiles before calibration (normalised scale, item = target in the job's order):
        none here."""
        return q_norm, mean_norm

    def backtest_metrics(self, q_norm: Float[np.ndarray, "item level pred"], inp: ForecastInput) -> dict[str, float]:
        """The job's test metrics (moirai_ft/evaluation: model_metrics) of this forecast against the truth."""
        job = self.job
        targets = [inp.columns.index(c) for c in job.targets]
        values = np.concatenate([inp.history, inp.truth])  # (time, target): the past, then the horizon
        mean, std = job.mean[targets], job.std[targets]
        start = len(inp.history)
        items = EvalItems(np.arange(len(targets)), np.full(len(targets), start))
        data = SimpleNamespace(normalized=((values - mean) / std).astype(np.float32), mean=mean, std=std,
                               table=SimpleNamespace(values=values))
        seasonal = seasonal_errors(values, items.columns, items.starts, seasonality(inp.freq))
        return model_metrics(q_norm, items, data, seasonal)  # type: ignore[arg-type]
