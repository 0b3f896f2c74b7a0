"""What a job's training ended with: why it stopped, its record (moirai_ft/result.py's JobResult), the
record with the test evaluation's fields added, and the value train.py returns to a sweeper."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from moirai_ft.artifacts import identity
from moirai_ft.data.prepare import PreparedData
from moirai_ft.evaluation.compare import evaluate_job, summary_line
from moirai_ft.evaluation.forecast import fingerprint
from moirai_ft.evaluation.zero_shot import SharedZeroShot
from moirai_ft.model.families import family_of
from moirai_ft.result import JobResult, Status
from moirai_ft.search.prune import UNTESTED, pruned_test_config
from moirai_ft.train.callbacks import BestWeights, DivergenceGuard
from moirai_ft.train.fit import Attempts, StepPlan

log = logging.getLogger(__name__)

def stop_reason(cfg: DictConfig, callbacks: dict[str, L.Callback]) -> str:
    """Why training ended: diverged, pruned (by the sweep's pruner), the selection callback's reason (early
    stopping), no_training for a zero-shot baseline (epochs=0), else max_epochs."""
    best: BestWeights = callbacks["best_weights"]
    guard: DivergenceGuard = callbacks["divergence"]
    if guard.diverged or best.stop_reason == "diverged":
        return "diverged"
    pruning = callbacks.get("pruning")
    if pruning is not None and pruning.pruned_at is not None:
        return "pruned"
    if best.stop_reason:
        return best.stop_reason
    return "no_training" if cfg.epochs == 0 else "max_epochs"


def training_result(
    cfg: DictConfig, attempts: Attempts, plan: StepPlan, world: int, params: tuple[int, int], started: float,
) -> JobResult:
    """The job's record once training ended (moirai_ft/result.py says what each field means)."""
    callbacks, trainer = attempts.fitted.callbacks, attempts.fitted.trainer
    best: BestWeights = callbacks["best_weights"]
    reason = stop_reason(cfg, callbacks)
    status = {"diverged": Status.diverged, "pruned": Status.pruned}.get(reason, Status.completed)
    outcome: dict[str, Any] = {}
    if status == Status.diverged:
        outcome["error"] = "training loss became NaN or infinite; the best weights before that are kept"
    if status == Status.pruned:  # a result, not a failure: the best weights so far are the job's (search/prune.py)
        outcome.update(pruned_at_check=callbacks["pruning"].pruned_at, pruned_reason=callbacks["pruning"].reason)
    return JobResult(
        status=status.value,
        **identity(cfg),
        family=family_of(cfg.model).name,
        batch_size=cfg.batch_size,
        world_size=world,
        accumulate_grad_batches=attempts.accumulate,
        oom_micro_batches=attempts.oom_micro_batches,
        best_val_loss=best.best_val_loss,
        best_epoch=best.best_epoch,
        best_step=best.best_step,
        epochs_run=round(trainer.global_step / plan.steps_per_epoch, 4),
        steps_run=trainer.global_step,
        stop_reason=reason,
        zero_shot_val_loss=best.zero_shot_val_loss,
        monitor=str(cfg.monitor),
        best_monitored=best.best_value,
        zero_shot_monitored=best.zero_shot_value,
        finetune_helped=best.finetune_helped,
        trainable_params=params[0],
        total_params=params[1],
        wall_s=round(time.time() - started, 3),
        train_samples_per_s=callbacks["throughput"].samples_per_s,
        **outcome,
    )


def with_test_evaluation(cfg: DictConfig, data: PreparedData, zero_shot: torch.nn.Module, job_dir: Path,
                         best: BestWeights, metrics: dict[str, Any], shared: SharedZeroShot | None = None) -> dict[str, Any]:
    """The metrics with the test evaluation's fields (rank 0 alone: the evaluation has no collectives)."""
    val_nll = (best.best_val_loss, best.zero_shot_val_loss)  # measured on the same validation windows
    eval_cfg = cfg
    if metrics["status"] == Status.pruned.value:  # tested on fewer windows, or not at all (search/prune.py)
        eval_cfg = pruned_test_config(cfg)
        if eval_cfg is None:
            metrics = {**metrics, "test_skipped": UNTESTED, "zero_shot_fingerprint": (  # re-evaluation checks it
                shared.weights if shared is not None else fingerprint(zero_shot))}
            log.info(summary_line(metrics))
            return JobResult.from_dict(metrics).to_dict()
    # the selected model is read back from checkpoints/best, as re-evaluation reads it
    metrics = {**metrics, **evaluate_job(eval_cfg, data, zero_shot, job_dir, val_nll, shared)}
    log.info(summary_line(metrics))
    return JobResult.from_dict(metrics).to_dict()  # a field evaluate_job added must be declared in result.py


def objective(metrics: dict[str, Any]) -> float:
    """What train.py returns to a sweeper: the best monitored validation value (the validation loss for
    monitor=val_nll and for jobs from before the monitor), +inf for a job with no result."""
    value = metrics.get("best_monitored", metrics.get("best_val_loss"))
    ok = metrics.get("status") in ("completed", "pruned")  # a pruned job has a result: its best check
    return float(value) if value is not None and ok and math.isfinite(value) else math.inf
