"""One fine-tuning job from a composed config: checks, data, model, the fit (fit.py), selection of the best
weights, the test evaluation and the job's record (outcome.py), and every outcome written to metrics.json."""

from __future__ import annotations

import copy
import logging
import math
import time
import traceback
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig

from moirai_ft.artifacts import CHECKPOINTS, METRICS, identity, write_json_atomic
from moirai_ft.config.saved import save_config
from moirai_ft.config.schema import validate
from moirai_ft.data.prepare import prepare
from moirai_ft.errors import UserError, first_line
from moirai_ft.evaluation.forecast import fingerprint
from moirai_ft.evaluation.zero_shot import shared_zero_shot
from moirai_ft.model.families import family_of
from moirai_ft.model.load import count_params, load_module
from moirai_ft.model.patterns import apply_pattern
from moirai_ft.model.lora import adapter_state
from moirai_ft.result import JobResult
from moirai_ft.search.lr_find import run_lr_find
from moirai_ft.search.prune import finish_trial, job_trial, pruning_callbacks
from moirai_ft.train import distributed
from moirai_ft.train.callbacks import BestWeights
from moirai_ft.train.fit import fit_within_memory, plan_steps
from moirai_ft.train.from_config import check_loggers
from moirai_ft.train.outcome import objective, training_result, with_test_evaluation
from moirai_ft.train.trackers import log_job_result
from moirai_ft.weights import CHECKSUM, best_dir, checksum

log = logging.getLogger(__name__)


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
            metrics = with_test_evaluation(cfg, data, zero_shot, job_dir, best, metrics, shared)
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
