"""metrics.json, the result of one job: the single definition of its fields and what each means.

The job (moirai_ft/train/job.py) writes it, the sweep (moirai_ft/sweep/runner.py) writes the records of jobs
it refuses or skips, analyze (moirai_ft/analysis) reads it, and the tests take their key sets from here.
A record holds only the fields its outcome has: a failed job has its identity, status, error and wall_s; a
trained one everything up to the test evaluation's fields. Torch-free: analyze imports it.

ADDING A FIELD: one line in JobResult, `name: type = result_field("what it means")` (`trained=True` when every
trained job has it, `nested=True` for a {name: value} dict that analyze flattens as `name.key` columns).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any


class _Unset:
    """A field the record does not have (not written to metrics.json); distinct from null."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


class Status(str, Enum):
    completed = "completed"  # trained, selected the best weights, evaluated
    diverged = "diverged"  # the loss became NaN/inf; the best weights before that are kept and evaluated
    pruned = "pruned"  # stopped early by the sweep's pruner (moirai_ft/search/prune.py); its best weights kept
    lr_find = "lr_find"  # an lr range test (lr_find=true, moirai_ft/search/lr_find.py): a suggestion, no model
    failed = "failed"  # stopped with `error`; `error_type` config (fix the command) or runtime
    running = "running"  # (the sweep's record for a skipped job) another process runs this config now
    # budget=: the plan said the job could not finish in the sweep's time left; it never trained (no result).
    # The same command with a larger budget continues it (moirai_ft/budget/clock.py)
    not_started = "not started: budget"


# results a rerun would reproduce: a sweep never retrains them
FINAL = (Status.completed.value, Status.diverged.value, Status.pruned.value, Status.lr_find.value)


def result_field(doc: str, *, trained: bool = False, nested: bool = False) -> Any:
    return field(default=UNSET, metadata={"doc": doc, "trained": trained, "nested": nested})


@dataclass
class JobResult:
    status: str = result_field("completed | diverged | pruned | lr_find | failed | running | not started: budget "
                               "(Status)", trained=True)
    # --- identity: where the job sits in a table, whatever its outcome (artifacts.identity) ---
    model: Any = result_field("model.name", trained=True)
    pattern: Any = result_field("pattern.name: what trained", trained=True)
    lr: Any = result_field("peak learning rate", trained=True)
    scheduler: Any = result_field("scheduler.name", trained=True)
    family: str = result_field("the model family that ran the job (moirai_ft/model/families)", trained=True)
    # --- why there is no result ---
    error: str = result_field("one line saying what went wrong and what to change (failed, diverged)")
    error_type: str = result_field("config: the user's input, fix it and rerun; runtime: a crash")
    pruned_at_check: int = result_field("(pruned) the validation check at which the pruner stopped the job")
    pruned_reason: str = result_field("(pruned) why the pruner stopped it")
    lr_suggestion: float = result_field("(lr_find) the lr where the loss falls fastest; null when it never fell")
    lr_sweep: list = result_field("(lr_find) lr values around the suggestion, for `-m lr=...`")
    lr_find_steps: int = result_field("(lr_find) steps the range test ran")
    planned_s: float = result_field("(not started: budget) the plan's estimate of the job's wall time, s")
    budget_left_s: float = result_field("(not started: budget) seconds of the sweep's budget left when it was due")
    # --- how it trained ---
    batch_size: int = result_field("global batch size (windows per optimizer step)", trained=True)
    world_size: int = result_field("processes (devices) the global batch was split over", trained=True)
    accumulate_grad_batches: int = result_field("> 1 after running out of GPU memory", trained=True)
    oom_micro_batches: list = result_field("the per-device micro-batches that did not fit", trained=True)
    best_val_loss: float = result_field("validation loss of the selected weights: the family's objective "
                                       "(Moirai 1.x and MoE: NLL; Moirai 2.0: pinball)", trained=True)
    best_epoch: int = result_field("epoch of the selected check (-1: the zero-shot model)", trained=True)
    best_step: int = result_field("optimizer step of the selected check", trained=True)
    epochs_run: float = result_field("optimizer steps run / steps per epoch", trained=True)
    steps_run: int = result_field("optimizer steps run", trained=True)
    stop_reason: str = result_field("max_epochs | early_stopping | diverged | pruned | no_training", trained=True)
    zero_shot_val_loss: float = result_field("validation loss (the family's objective) of the starting model",
                                            trained=True)
    monitor: str = result_field("what selected the best check and stopped early (val_nll|val_crps|val_mae)",
                                trained=True)
    best_monitored: float = result_field("the monitored value of the selected check (the objective)", trained=True)
    zero_shot_monitored: float = result_field("the monitored value of the starting model", trained=True)
    finetune_helped: bool = result_field("a check beat the zero-shot model (else the result is that model)",
                                         trained=True)
    trainable_params: int = result_field("parameters the pattern trains", trained=True)
    total_params: int = result_field("parameters of the module", trained=True)
    wall_s: float = result_field("seconds from the job's start to its record", trained=True)
    train_samples_per_s: float = result_field("training windows per second, validation excluded", trained=True)
    best_checksum: str = result_field("sha256 of checkpoints/best's files as the job left them (moirai_ft/weights.py): "
                                      "analyze, the sweep's resume and re-evaluation tell damaged weights by it",
                                      trained=True)
    # --- test evaluation (moirai_ft/evaluation/compare.py), rank 0 of a trained job ---
    test: dict = result_field("the selected model's test metrics (mase, wql, ..., val_nll; coverage_80: share of "
                              "observed targets in the 0.1-0.9 band, coverage_50 in 0.25-0.75 where kept)",
                              nested=True)
    zero_shot_test: dict = result_field("the starting model's test metrics", nested=True)
    rel_improvement: dict = result_field("per metric: 1 - selected / zero-shot (> 0: fine-tuning helped)",
                                         nested=True)
    rel_improvement_ci: dict = result_field("per metric: 95% paired bootstrap interval of rel_improvement")
    test_without_covariates: dict = result_field("the selected model's test metrics without its covariates "
                                                 "(jobs with covariates only)", nested=True)
    # --- blend=true and calibrate=conformal (moirai_ft/evaluation/planning.py), fitted on the validation windows ---
    blend_weight: float = result_field("(blend) w of w x fine-tuned + (1 - w) x zero-shot, chosen on validation")
    blend_validation: dict = result_field("(blend) the metric w minimised on validation and each grid weight's value")
    test_blend: dict = result_field("(blend) the blend's test metrics", nested=True)
    blend_rel_improvement: dict = result_field("(blend) vs_fine_tuned / vs_zero_shot: per metric, 1 - blend / part")
    blend_ci: dict = result_field("(blend) vs_fine_tuned / vs_zero_shot: per metric, 95% paired bootstrap interval "
                                  "of blend_rel_improvement over test windows")
    test_calibrated: dict = result_field("(calibrate) the selected model's test metrics with conformal bands",
                                         nested=True)
    test_blend_calibrated: dict = result_field("(calibrate and blend) the blend's test metrics with conformal bands",
                                               nested=True)
    calibration: dict = result_field("(calibrate) per forecast, test and validation coverage_80 (and wql) before "
                                     "and after; the offsets are in calibration.json")
    test_eval: dict = result_field("how the test ran: windows, samples, seed, seasonality, device, wall_s")
    zero_shot_fingerprint: str = result_field("hash of the starting weights, checked by re-evaluation")
    test_error: str = result_field("the test evaluation failed (eval_error.log); training result kept")
    test_skipped: str = result_field("why the job has no test evaluation (a pruned job: search/prune.py)")

    def to_dict(self) -> dict[str, Any]:
        """metrics.json's object: the fields this record has, in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not UNSET}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> JobResult:
        unknown = set(record) - FIELDS
        if unknown:
            raise TypeError(f"metrics.json fields {sorted(unknown)} are not declared in moirai_ft/result.py "
                            "JobResult: add them there, with what they mean")
        return cls(**record)

    @classmethod
    def failed(cls, identity: dict[str, Any], error: str, error_type: str, **more: Any) -> JobResult:
        return cls(status=Status.failed.value, error=error, error_type=error_type, **identity, **more)


FIELDS = frozenset(f.name for f in fields(JobResult))
# every completed or diverged record has these (tests assert them; analyze can rely on them)
TRAINED_FIELDS = frozenset(f.name for f in fields(JobResult) if f.metadata["trained"])
# {name: value} dicts that analyze flattens as `test.mase` columns
NESTED_FIELDS = tuple(f.name for f in fields(JobResult) if f.metadata["nested"])
