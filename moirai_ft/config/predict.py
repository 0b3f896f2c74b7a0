"""predict.py's config schema (conf/predict.yaml): every key typed, so a misspelt key or a wrong value is one
line before anything loads (moirai_ft/config/precheck.py). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from moirai_ft.config.data import DataSchema
from moirai_ft.errors import UserError


class OutputFormat(str, Enum):
    csv = "csv"
    parquet = "parquet"


@dataclass
class FutureSchema:
    path: Optional[str] = None  # a file with the known covariates over the horizon (timestamps + their columns)


@dataclass
class PredictSchema:
    job: str = MISSING  # a job directory, or a sweep (or a root above several): the job analyze ranks first
    out: Optional[str] = None  # null: a new directory under the job's predictions/
    format: OutputFormat = OutputFormat.csv  # forecasts.csv | forecasts.parquet
    rank_by: str = "best_val_loss"  # a sweep's job: analyze.py's --metric (test.mase, best_monitored, ...)
    zero_shot: bool = False  # forecast with the job's starting model instead of its selected one
    blend: bool = False  # forecast with the job's fine-tuned/zero-shot blend (a job run with blend=true)
    calibrated: bool = True  # apply the job's conformal calibration where it has one (calibrate=conformal)
    backtest: Optional[str] = None  # a date: forecast from there, scored against the data's values
    device: str = "auto"  # auto (the GPU when the job's hardware allows one) | cpu | cuda
    plot_items: int = 6  # targets drawn in forecast.png (0: no picture)
    future: FutureSchema = field(default_factory=FutureSchema)
    # the job's data options apply; only the data.* keys given on the command line replace them
    data: DataSchema = field(default_factory=DataSchema)


def validate_predict(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg, "job"):
        raise UserError("job= is missing: give a job directory, or a sweep directory for its best job (job=multirun/...)")
    if cfg.blend and cfg.zero_shot:
        raise UserError("blend=true blends the job's fine-tuned model with its zero-shot one; drop zero_shot=true")
    if cfg.plot_items < 0:
        raise UserError(f"plot_items must be >= 0 (got {cfg.plot_items})")
    if str(cfg.device) not in ("auto", "cpu", "cuda") and not str(cfg.device).startswith("cuda:"):
        raise UserError(f"device must be auto, cpu or cuda (got {cfg.device})")

