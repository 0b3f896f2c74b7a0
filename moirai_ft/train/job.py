"""One fine-tuning job from a composed config: checks, data, model, Lightning fit with validation
before and during training, selection of the best weights, and the job's artifacts."""

from __future__ import annotations

import copy
import gc
import logging
import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from moirai_ft.artifacts import CHECKPOINTS, HISTORY, LAST, METRICS, identity, write_json_atomic
from moirai_ft.config.saved import save_config
from moirai_ft.train.callbacks import BestWeights, DivergenceGuard
from moirai_ft.search.monitor import monitor_callbacks
from moirai_ft.search.prune import UNTESTED, finish_trial, job_trial, pruned_test_config, pruning_callbacks
from moirai_ft.search.lr_find import run_lr_find
from moirai_ft.config.schema import validate
from moirai_ft.data.prepare import PreparedData, prepare
from moirai_ft.train import distributed
from moirai_ft.errors import UserError, first_line
from moirai_ft.weights import CHECKSUM, best_dir, checksum
from moirai_ft.evaluation.evaluate import evaluate_job, summary_line
from moirai_ft.evaluation.forecast import fingerprint
from moirai_ft.evaluation.zero_shot import SharedZeroShot, shared_zero_shot
from moirai_ft.console import is_terminal, quiet_third_party
from moirai_ft.train.from_config import build_callbacks, build_loggers, check_loggers
from moirai_ft.train.loggers import checkpoint_step
from moirai_ft.train.trackers import log_job_result
from moirai_ft.train.finetuner import MoiraiFineTuner
from moirai_ft.train.schedulers import warmup_step_count
from moirai_ft.train.zero_shot import validate_zero_shot
from moirai_ft.train.progress import LineProgress, SparseProgressBar
from moirai_ft.model.families import family_of
from moirai_ft.model.load import count_params, load_module
from moirai_ft.model.patterns import apply_pattern
from moirai_ft.model.lora import adapter_state, load_plain
from moirai_ft.data.windows import IndexBatches, eval_batches, index_loader
from moirai_ft.result import JobResult, Status

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


def evaluate(cfg: DictConfig, data: PreparedData, zero_shot: torch.nn.Module, job_dir: Path, best: BestWeights,
             metrics: dict[str, Any], shared: SharedZeroShot | None = None) -> dict[str, Any]:
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


def run_job(cfg: DictConfig, job_dir: Path, extra_callbacks: dict[str, L.Callback] | None = None,
            shared_root: Path | None = None) -> dict[str, Any]:
    """Train and select; returns the metrics (also written to job_dir/metrics.json).
    `extra_callbacks` join the job's own (the benchmark's step timer, the tests' sync counter).
    `shared_root`: where the jobs of its sweep share the zero-shot evaluation (None: the job evaluates alone)."""
    started = time.time()
    validate(cfg)
    check_loggers(cfg.logger)  # a tracker that is not installed: one line, before any data or model
    family_of(cfg.model).check_compile(cfg.hardware.compile)
    rank, world = distributed.global_rank(), distributed.world_size(cfg)
    per_device = distributed.per_device_batch_size(cfg.batch_size, world)  # batch_size is the global batch
    if rank == 0:
        save_config(cfg, job_dir)  # so `python -m moirai_ft.evaluate <job_dir>` can rebuild the job
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = prepare(cfg)  # also the preflight against the model's limits (moirai_ft/data/preflight.py)
    module = load_module(cfg.model)
    # the starting model, compared with the selected one on the test split (by rank 0, which alone evaluates)
    zero_shot = copy.deepcopy(module)  # on every rank: an out-of-memory restart starts again from it
    shared = None
    if shared_root is not None and rank == 0:  # the sweep's zero-shot entries (moirai_ft/evaluation/zero_shot.py)
        shared = shared_zero_shot(shared_root, fingerprint(zero_shot), data, cfg.hardware.accelerator, str(job_dir))
    module = apply_pattern(module, cfg.pattern)  # the family's parameters per pattern (LoRA: adapters injected)
    params = count_params(module)
    plan = plan_steps(cfg, len(data.train), per_device, rank, world)
    (job_dir / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    if rank == 0:
        data.save_normalization(job_dir / "normalization.json")

    # the job's trial in its sweep's Optuna study (prune=..., hydra/sweeper=optuna): rank 0 reports to it
    trial = job_trial(cfg, job_dir) if rank == 0 else None
    try:
        extra_callbacks = {**pruning_callbacks(cfg, trial), **(extra_callbacks or {})}
        attempts = fit_within_memory(cfg, job_dir, module, zero_shot, data, rank, world, per_device, plan, extra_callbacks,
                                     adapter_state(module), shared)
        distributed.collectives_finished()  # rank 0 waits on no other rank from here
        best: BestWeights = attempts.fitted.callbacks["best_weights"]
        best.restore_best(attempts.fitted.finetuner)
        if not best.finetune_helped:
            log.warning("no validation check beat the zero-shot model: the job's result is the starting model")
        metrics = training_result(cfg, attempts, plan, world, params, started).to_dict()
        metrics[CHECKSUM] = checksum(best_dir(job_dir))  # later readers tell damaged weights (moirai_ft/weights.py)
        if rank == 0:  # test evaluation has no collectives: one rank does it and writes its files
            metrics = evaluate(cfg, data, zero_shot, job_dir, best, metrics, shared)
            log_job_result(attempts.fitted.trainer.loggers, metrics, job_dir)  # the trackers' test metrics and plots
            finish_trial(trial, metrics["status"], objective(metrics))
        return metrics
    except BaseException as e:
        # a crash must not leave its trial RUNNING: pruners and samplers read FAIL trials as over, a RUNNING
        # one as a job still to report (the optuna sweeper tells its own trials; a grid's are the job's)
        finish_trial(trial, "failed", math.inf, f"{type(e).__name__}: {first_line(e)}")
        raise


def run(cfg: DictConfig, job_dir: Path, extra_callbacks: dict[str, L.Callback] | None = None,
        shared_root: Path | None = None) -> dict[str, Any]:
    """run_job, with every outcome recorded in metrics.json: a raising job is `failed` with its error,
    and never takes a sweep down with it. `shared_root`: run_job's."""
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    base = identity(cfg)
    rank = distributed.global_rank()  # only rank 0 of a multi-device job writes files

    def record_stuck(message: str) -> None:  # another rank died and left rank 0 waiting in a collective
        failed = JobResult.failed(base, message, "runtime", wall_s=round(time.time() - started, 3))
        write_json_atomic(job_dir / METRICS, failed.to_dict())

    try:
        with distributed.job_processes(cfg, job_dir, on_stuck=record_stuck):
            # lr_find=true: the lr range test instead of a training (moirai_ft/search/lr_find.py)
            metrics = run_lr_find(cfg, job_dir) if cfg.lr_find else run_job(cfg, job_dir, extra_callbacks, shared_root)
    except UserError as e:
        metrics = JobResult.failed(base, str(e), "config").to_dict()
    except Exception as e:  # noqa: BLE001 - any crash becomes a recorded failure
        if rank == 0:
            (job_dir / "error.log").write_text(traceback.format_exc())
        else:
            traceback.print_exc()  # rank 0 records the job; this rank's trace goes to its own output
        metrics = JobResult.failed(base, f"{type(e).__name__}: {first_line(e)}", "runtime").to_dict()
    metrics.setdefault("wall_s", round(time.time() - started, 3))
    if rank == 0:
        write_json_atomic(job_dir / METRICS, metrics)
    return metrics


def objective(metrics: dict[str, Any]) -> float:
    """What train.py returns to a sweeper: the best monitored validation value (the validation loss for
    monitor=val_nll and for jobs from before the monitor), +inf for a job with no result."""
    value = metrics.get("best_monitored", metrics.get("best_val_loss"))
    ok = metrics.get("status") in ("completed", "pruned")  # a pruned job has a result: its best check
    return float(value) if value is not None and ok and math.isfinite(value) else math.inf
