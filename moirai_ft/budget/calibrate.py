"""What a job's parts cost on this machine, measured with the job's own code: a short real fit (a zero-shot
check, STEPS optimizer steps with a validation check in the middle and at the end, through fit.fit, so
Lightning's loop, the callbacks, best weights and last.ckpt writes are all in it), one forecast batch of the
monitor and of the test, and one test evaluation of one batch.

One calibration serves every job with the same cost key (model, pattern, batch size, hardware, windows'
shape, monitor and evaluation settings: what changes the time of a step, a check or a test batch); lr,
epochs, patience, seeds and the data's length change only how many there are (plan.py counts them).
"""

from __future__ import annotations

import copy
import json
import logging
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf, open_dict

from moirai_ft.data.prepare import PreparedData
from moirai_ft.data.windows import eval_batches
from moirai_ft.evaluation.compare import evaluate_models
from moirai_ft.evaluation.forecast import eval_device, evaluating_on, forecast_quantiles
from moirai_ft.model.load import load_module
from moirai_ft.model.patterns import apply_pattern
from moirai_ft.search.monitor import is_forecast
from moirai_ft.train import distributed
from moirai_ft.values import plain

log = logging.getLogger(__name__)

STEPS = 6  # optimizer steps of the calibration fit: a check after STEPS // 2 and at the end
# settings that change how many steps, checks and windows a job has (counted by plan.py), or nothing of its
# time: left out of the cost key, so jobs differing only in them share one calibration
NOT_IN_COST_KEY = ("lr", "weight_decay", "epochs", "steps_per_epoch", "warmup_steps", "gradient_clip",
                   "oom_min_batch_size", "val_check_interval", "val_max_windows", "patience", "min_delta",
                   "smoothing", "seed", "scheduler", "prune", "logger", "lr_find", "lr_finder", "resume",
                   "sweep_root", "plan", "budget")
NOT_IN_DATA_COST = ("num_days", "train_ratio", "val_ratio", "window_stride", "eval_stride", "val_start", "test_start")
TRACKERS = ("mlflow", "wandb")  # loggers that would open a run on a tracking server: not for a calibration


@dataclass
class Calibration:
    label: str  # model, pattern and batch size, as the plan prints them
    device: str
    load_s: float  # the model loaded, copied (the zero-shot baseline) and its pattern applied
    step_s: float  # one optimizer step, Lightning's loop included
    val_batch_s: float  # one validation batch (the loss)
    monitor_batch_s: float  # the forecast monitor (monitor=val_crps|val_mae) on one validation batch; 0 for val_nll
    check_s: float  # a check besides its batches: history, best weights and last.ckpt written
    test_batch_s: float  # one test batch of eval.num_samples paths, one model
    test_fixed_s: float  # the test evaluation besides its batches: the selected weights read back, metrics, picture
    measured_s: float  # what this calibration took

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cost_key(cfg: DictConfig) -> str:
    """What makes two jobs' steps, checks and test batches cost the same (module doc)."""
    tree = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False, enum_to_str=True)
    assert isinstance(tree, dict)
    tree.pop("hydra", None)
    for key in NOT_IN_COST_KEY:
        tree.pop(key, None)
    for key in NOT_IN_DATA_COST:
        tree.get("data", {}).pop(key, None)
    tree.get("eval", {}).pop("seed", None)
    tree.get("eval", {}).pop("max_windows", None)
    return json.dumps(tree, sort_keys=True, default=str)


def label(cfg: DictConfig) -> str:
    pattern = plain(cfg.pattern.name)
    return f"model={cfg.model.name} pattern={pattern} batch_size={cfg.batch_size}"


class _Timer(L.Callback):
    """Timestamps of the calibration fit: each training batch's start, each validation batch."""

    def __init__(self) -> None:
        self.batch_starts: list[float] = []
        self.val_batches: list[float] = []
        self._val_started = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batch_starts.append(time.perf_counter())

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._val_started = time.perf_counter()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.state.fn == "fit":
            self.val_batches.append(time.perf_counter() - self._val_started)


def _calibration_config(cfg: DictConfig, per_device: int) -> DictConfig:
    """The job's config, shortened to the calibration fit on one device, with no pruner and no tracker."""
    ccfg = copy.deepcopy(cfg)
    with open_dict(ccfg):
        ccfg.epochs, ccfg.steps_per_epoch, ccfg.val_check_interval = 1, STEPS, STEPS // 2
        ccfg.val_max_windows, ccfg.patience, ccfg.warmup_steps = per_device, 10**6, 0
        ccfg.prune.name, ccfg.prune.zero_shot_checks = "none", None
        ccfg.hardware.devices, ccfg.hardware.strategy = 1, "auto"
        ccfg.hardware.progress_bar_refresh = 0  # the calibration is not the user's fit to watch
        ccfg.eval.max_windows = cfg.eval.batch_size  # one test batch, of the job's size
        for name in [n for n, node in ccfg.logger.items() if any(t in str(node.get("_target_")) for t in TRACKERS)]:
            del ccfg.logger[name]
    return ccfg


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def calibrate(cfg: DictConfig, data: PreparedData, workdir: Path | None = None) -> Calibration:
    """Measure the cost of cfg's steps, checks and test batches on its data (module doc). Writes only into a
    temporary directory (under `workdir` when given: the disk the jobs write to), removed afterwards."""
    from moirai_ft.train.fit import fit  # the job's own fit: its loop, callbacks and checkpoint writes

    started = time.perf_counter()
    world = distributed.world_size(cfg)
    per_device = distributed.per_device_batch_size(cfg.batch_size, world)
    ccfg = _calibration_config(cfg, per_device)
    t0 = time.perf_counter()
    module = load_module(cfg.model)
    zero_shot = copy.deepcopy(module)
    module = apply_pattern(module, cfg.pattern)
    load_s = time.perf_counter() - t0
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".plan_calibration_", dir=workdir) as tmp:
        job_dir = Path(tmp)
        (job_dir / "checkpoints").mkdir()
        timer = _Timer()
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        fitted = fit(ccfg, job_dir, module, data, 0, 1, per_device, 1, STEPS, STEPS, {"plan_timer": timer})
        starts = timer.batch_starts
        half = STEPS // 2
        # step intervals without a check inside, the first one (optimizer state, first-call costs) left out
        steps = [b - a for i, (a, b) in enumerate(zip(starts, starts[1:])) if i + 1 != half and i > 0]
        step_s = statistics.median(steps) if steps else 0.0
        val_batch_s = statistics.median(timer.val_batches) if timer.val_batches else 0.0
        device = eval_device(cfg.hardware.accelerator)
        val_one = eval_batches(len(data.val), per_device, per_device)[:1]
        monitor_batch_s = 0.0
        if is_forecast(cfg):
            trained = fitted.finetuner.module
            monitor_batch_s = _timed(lambda: forecast_quantiles(trained, data.val, val_one, cfg.monitor_samples,
                                                                cfg.seed, desc="calibration monitor"))
        in_check = starts[half] - starts[half - 1] if len(starts) > half else step_s
        check_s = max(0.0, in_check - step_s - val_batch_s - monitor_batch_s)
        test_one = eval_batches(len(data.test), cfg.eval.batch_size, cfg.eval.batch_size)[:1]
        with evaluating_on(zero_shot, device):  # twice: the first call pays one-off costs a sweep pays once
            test_batch_s = min(_timed(lambda: forecast_quantiles(zero_shot, data.test, test_one, cfg.eval.num_samples,
                                                                 cfg.eval.seed, desc="calibration test"))
                               for _ in range(2))
        eval_s = _timed(lambda: evaluate_models(ccfg, data, zero_shot, job_dir, (1.0, 1.0)))
        test_fixed_s = max(0.0, eval_s - 2 * test_batch_s)
    calibration = Calibration(label(cfg), str(device), load_s, step_s, val_batch_s, monitor_batch_s, check_s,
                              test_batch_s, test_fixed_s, time.perf_counter() - started)
    log.info("calibrated %s: %s", calibration.label, calibration)
    return calibration
