"""The Lightning fit of one job: its Trainer, the optimizer steps it plans, validation before and during
training (and once more after it when the last steps went unchecked), and the restart with a smaller
micro-batch when the GPU runs out of memory. The job (job.py) calls `fit_within_memory`; the plan and the
calibration (moirai_ft/budget) call `plan_steps` and `fit` to count and time the same loop."""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from moirai_ft.artifacts import CHECKPOINTS, HISTORY, LAST
from moirai_ft.console import is_terminal, quiet_third_party
from moirai_ft.data.prepare import PreparedData
from moirai_ft.data.windows import IndexBatches, eval_batches, index_loader
from moirai_ft.errors import UserError
from moirai_ft.evaluation.zero_shot import SharedZeroShot
from moirai_ft.model.lora import load_plain
from moirai_ft.search.monitor import monitor_callbacks
from moirai_ft.train import distributed
from moirai_ft.train.finetuner import MoiraiFineTuner
from moirai_ft.train.from_config import build_callbacks, build_loggers
from moirai_ft.train.loggers import checkpoint_step
from moirai_ft.train.progress import LineProgress, SparseProgressBar
from moirai_ft.train.schedulers import warmup_step_count
from moirai_ft.train.zero_shot import validate_zero_shot

log = logging.getLogger(__name__)


def build_trainer(
    cfg: DictConfig, job_dir: Path, callbacks: dict[str, L.Callback], steps_per_epoch: int, accumulate: int = 1,
    resume_step: int | None = None,
) -> L.Trainer:
    """steps_per_epoch counts optimizer steps; Lightning counts batches, `accumulate` to a step.
    `resume_step`: the step of the checkpoint the fit resumes from (the logs keep what came before)."""
    vci = cfg.val_check_interval
    by_steps = isinstance(vci, int) and not isinstance(vci, bool)
    if by_steps:
        vci = vci * accumulate
    quiet_third_party()  # every job: pytest and a sweep's in-process jobs reset warning filters
    refresh = cfg.hardware.progress_bar_refresh
    progress_bar: list[L.Callback] = []
    if refresh > 0:  # a terminal redraws a bar; a file gets lines, not carriage-return frames
        progress_bar = [SparseProgressBar(refresh_rate=refresh) if is_terminal()
                        else LineProgress(cfg.hardware.progress_log_s, cfg.batch_size)]
    return L.Trainer(
        default_root_dir=job_dir,
        max_epochs=cfg.epochs,
        limit_train_batches=steps_per_epoch * accumulate,
        accumulate_grad_batches=accumulate,
        accelerator=cfg.hardware.accelerator,
        devices=cfg.hardware.devices,
        precision=cfg.hardware.precision,
        strategy=cfg.hardware.strategy,
        gradient_clip_val=cfg.gradient_clip,
        gradient_clip_algorithm="norm",
        val_check_interval=vci,
        check_val_every_n_epoch=None if by_steps else 1,
        num_sanity_val_steps=0,
        callbacks=list(callbacks.values()) + progress_bar,
        logger=list(build_loggers(cfg.logger, job_dir, resume_step).values()),  # conf/logger
        log_every_n_steps=max(1, min(cfg.hardware.log_every_n_steps, steps_per_epoch)),
        enable_progress_bar=bool(progress_bar),
        enable_model_summary=False,
        use_distributed_sampler=False,  # IndexBatches shards by rank itself (moirai_ft/train/distributed.py)
    )


@dataclass
class Fitted:
    trainer: L.Trainer
    finetuner: MoiraiFineTuner
    callbacks: dict[str, L.Callback]


def validate_last_steps(
    trainer: L.Trainer, finetuner: MoiraiFineTuner, val_loader: Any, callbacks: dict[str, L.Callback]
) -> None:
    """A closing validation check when training ended after its last check: a val_check_interval longer
    than the run, or one that does not divide it, would otherwise throw the last steps away (with no
    check at all, the job's result would be the zero-shot model)."""
    best = callbacks["best_weights"]
    last_checked = best.last_step
    stopped = best.stop_reason is not None or callbacks["divergence"].diverged or finetuner.diverged()
    if trainer.global_step > last_checked and not stopped and not trainer.interrupted:
        log.info("validating the last %d training steps (no check since step %d)",
                 trainer.global_step - max(last_checked, 0), max(last_checked, 0))
        trainer.validate(finetuner, val_loader, verbose=False)


def fit(
    cfg: DictConfig, job_dir: Path, module: torch.nn.Module, data: PreparedData, rank: int, world: int,
    per_device: int, accumulate: int, steps_per_epoch: int, total_steps: int,
    extra_callbacks: dict[str, L.Callback] | None, shared: SharedZeroShot | None = None,
) -> Fitted:
    """Validate the starting model, then train with validation checks; resumes from last.ckpt if there is one.
    `accumulate` micro-batches of per_device / accumulate windows make one optimizer step. `shared`: the
    sweep's zero-shot entries (moirai_ft/evaluation/zero_shot.py)."""
    micro = per_device // accumulate
    order = IndexBatches(len(data.train), micro, True, cfg.seed, steps_per_epoch * accumulate, rank, world)
    val_batches = distributed.shard_batches(
        eval_batches(len(data.val), cfg.batch_size, cfg.val_max_windows), rank, world, per_device
    )
    ckpt_dir = job_dir / CHECKPOINTS
    finetuner = MoiraiFineTuner(
        module, data.train, data.val, order, lr=cfg.lr, weight_decay=cfg.weight_decay,
        scheduler=cfg.scheduler.name, warmup_steps=warmup_step_count(cfg.warmup_steps, total_steps),
        total_steps=total_steps,
        min_lr_ratio=cfg.scheduler.min_lr_ratio, compile=cfg.hardware.compile,
    )
    # monitor=val_crps|val_mae: a forecast of the validation windows at every check, before History and
    # BestWeights read it (moirai_ft/search/monitor.py)
    callbacks: dict[str, L.Callback] = monitor_callbacks(
        cfg, data, eval_batches(len(data.val), cfg.batch_size, cfg.val_max_windows))  # every rank: all windows
    callbacks.update(build_callbacks(cfg, job_dir))  # conf/callbacks, by name
    callbacks.update(extra_callbacks or {})
    last = ckpt_dir / LAST
    resume_step = checkpoint_step(last) if last.is_file() else None
    trainer = build_trainer(cfg, job_dir, callbacks, steps_per_epoch, accumulate, resume_step)
    distributed.check_trainer(trainer, rank, world)
    val_loader = index_loader(val_batches)
    try:
        if resume_step is not None:
            log.info("resuming from %s (step %d)", last, resume_step)
            trainer.fit(finetuner, index_loader(order), val_loader, ckpt_path=str(last))
        else:
            # the zero-shot model: history row epoch -1, once per sweep (a multi-device job validates it itself:
            # its ranks would have to agree on reading or computing)
            validate_zero_shot(cfg, trainer, finetuner, val_loader, callbacks, shared if world == 1 else None)
            trainer.fit(finetuner, index_loader(order), val_loader)
        validate_last_steps(trainer, finetuner, val_loader, callbacks)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception:
        # NaN weights crash uni2ts's mixture (torch.poisson on a NaN rate in log_prob) before
        # DivergenceGuard's next look at the flag: after a non-finite loss or weights, that is divergence
        weights_nonfinite = any(not torch.isfinite(p).all() for p in finetuner.module.parameters())
        if not (finetuner.diverged() or weights_nonfinite):
            raise
        callbacks["divergence"].diverged = True
    return Fitted(trainer, finetuner, callbacks)


@dataclass(frozen=True)
class StepPlan:
    steps_per_epoch: int  # optimizer steps, at the full per-device batch
    total_steps: int  # of the whole run: the schedule's length


def plan_steps(cfg: DictConfig, train_windows: int, per_device: int, rank: int, world: int) -> StepPlan:
    """Optimizer steps per epoch and in the run; refuses a split smaller than one batch and a warmup longer
    than the run. A smaller micro-batch after running out of memory keeps these (it accumulates)."""
    steps_per_epoch = len(IndexBatches(train_windows, per_device, True, cfg.seed, cfg.steps_per_epoch, rank, world))
    if steps_per_epoch == 0:
        raise UserError(
            f"the train split has {train_windows} windows, fewer than one batch of batch_size={cfg.batch_size}; "
            "lower batch_size or data.window_stride"
        )
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.epochs > 0 and warmup_step_count(cfg.warmup_steps, total_steps) > total_steps:
        raise UserError(
            f"warmup_steps={cfg.warmup_steps} is longer than the whole run ({cfg.epochs} epochs x "
            f"{steps_per_epoch} steps = {total_steps}); lower warmup_steps, give a fraction of the run "
            "(warmup_steps=0.05) or raise epochs/steps_per_epoch"
        )
    return StepPlan(steps_per_epoch, total_steps)


@dataclass
class Attempts:
    """How the fit finally ran: `accumulate` micro-batches per optimizer step, after running out of GPU
    memory at each of `oom_micro_batches`."""

    fitted: Fitted
    accumulate: int
    oom_micro_batches: list[int]


def fit_within_memory(
    cfg: DictConfig, job_dir: Path, module: torch.nn.Module, zero_shot: torch.nn.Module, data: PreparedData,
    rank: int, world: int, per_device: int, plan: StepPlan, extra_callbacks: dict[str, L.Callback] | None,
    adapters: dict[str, torch.Tensor] | None = None,
    shared: SharedZeroShot | None = None,
) -> Attempts:
    """fit(); out of GPU memory, start again from the zero-shot weights with half the micro-batch and twice the
    gradient accumulation, so the effective batch, the schedule and the data order stay those of the config."""
    accumulate, oom_micro_batches = 1, []
    while True:
        try:
            fitted = fit(cfg, job_dir, module, data, rank, world, per_device, accumulate, plan.steps_per_epoch,
                         plan.total_steps, extra_callbacks, shared)
            return Attempts(fitted, accumulate, oom_micro_batches)
        except torch.cuda.OutOfMemoryError:
            micro = per_device // accumulate
            oom_micro_batches.append(micro)
            if micro // 2 < cfg.oom_min_batch_size or per_device % (accumulate * 2):
                raise RuntimeError(
                    f"out of GPU memory at a micro-batch of {micro} windows (floor oom_min_batch_size="
                    f"{cfg.oom_min_batch_size}); use a smaller model, context_length or batch_size"
                ) from None
            log.warning("out of GPU memory at a micro-batch of %d: retrying with %d x %d", micro, micro // 2, accumulate * 2)
            accumulate *= 2
            fitted = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            # from scratch: the failed attempt may have taken steps (LoRA: A and B back to their start, too)
            load_plain(module, zero_shot.state_dict(), adapters)
            for stale in (job_dir / CHECKPOINTS / LAST, job_dir / HISTORY):
                stale.unlink(missing_ok=True)
