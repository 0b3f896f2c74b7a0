"""Callbacks of a fine-tuning job: the validation history, early stopping with best-weights
selection (the zero-shot model included as a candidate), and a stop on non-finite loss."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path
from typing import Any

import lightning as L

from moirai_ft.artifacts import atomic_write
from moirai_ft.model.lora import load_plain, save_plain
from moirai_ft.train.finetuner import MoiraiFineTuner

HISTORY_COLUMNS = ("epoch", "step", "train_loss", "val_loss", "lr")


def _current_lr(trainer: L.Trainer) -> float:
    if not trainer.optimizers:
        return float("nan")
    return float(trainer.optimizers[0].param_groups[0]["lr"])


def check_position(trainer: L.Trainer) -> tuple[bool, int, int]:
    """(pretraining, epoch, step) of a validation check. `trainer.validate` before any step is the
    zero-shot check; after the fit (fit.validate_last_steps's closing check of the last steps) it belongs
    to the last epoch."""
    if trainer.state.fn == "validate" and trainer.global_step == 0:
        return True, -1, 0
    epoch = trainer.current_epoch if trainer.state.fn == "fit" else max(trainer.current_epoch - 1, 0)
    return False, epoch, trainer.global_step


class History(L.Callback):
    """training_history.csv: one row per validation check; the pre-training check is epoch -1, step 0.
    `extra`: column -> key in trainer.callback_metrics (the monitored forecast metric, val_crps)."""

    def __init__(self, path: Path, extra: dict[str, str] | None = None):
        self.path = Path(path)
        self.extra = dict(extra or {})
        self.rows: list[dict[str, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: MoiraiFineTuner) -> None:
        if trainer.sanity_checking:
            return
        pretraining, epoch, step = check_position(trainer)
        row = {
            "epoch": epoch,
            "step": step,
            "train_loss": float("nan") if pretraining else pl_module.pop_train_loss(),
            "val_loss": float(trainer.callback_metrics["val/loss"]),
            "lr": 0.0 if pretraining else _current_lr(trainer),
        }
        for column, key in self.extra.items():
            value = trainer.callback_metrics.get(key)
            row[column] = float(value) if value is not None else float("nan")
        self.rows.append(row)
        if trainer.is_global_zero:
            self.write()

    def write(self) -> None:
        with atomic_write(self.path, newline="") as f:
            w = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS + tuple(self.extra))
            w.writeheader()
            w.writerows(self.rows)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])


class BestWeights(L.Callback):
    """Early stopping and model selection on the monitored validation value (lower is better): the
    validation loss by default, `monitor_key` names another entry of trainer.callback_metrics
    (moirai_ft/search/monitor.py puts the forecast metrics there).

    Every validation check is a candidate, the pre-training (zero-shot) check included: if no
    fine-tuning check beats it by `min_delta`, the job's result is the model it started from.
    The monitored value is the mean of the last `smoothing` checks (1 = the raw loss); patience
    counts validation checks. The best weights are written to `best_dir` with save_pretrained, so
    they load back as `model.checkpoint=<best_dir>` (or in uni2ts's MoiraiForecast).
    """

    def __init__(self, best_dir: Path, patience: int, min_delta: float = 0.0, smoothing: int = 1,
                 monitor_key: str = "val/loss"):
        self.best_dir = Path(best_dir)
        self.monitor_key = monitor_key
        self.patience = patience
        self.min_delta = min_delta
        self.smoothing = smoothing
        self.losses: list[float] = []
        self.best_score = math.inf
        self.best_val_loss = math.inf
        self.best_epoch = -1
        self.best_step = 0
        self.wait = 0
        self.stop_reason: str | None = None
        self.zero_shot_val_loss: float | None = None
        self.values: list[float] = []  # the monitored value per check (== losses for val/loss)
        self.best_value = math.inf  # the monitored value at the selected check
        self.zero_shot_value: float | None = None
        self.checks = 0  # validation checks seen, the zero-shot one included
        self.last_step = -1  # optimizer step of the latest check (fit.validate_last_steps reads it)

    @property
    def finetune_helped(self) -> bool:
        return self.best_step > 0

    def on_validation_end(self, trainer: L.Trainer, pl_module: MoiraiFineTuner) -> None:
        if trainer.sanity_checking:
            return
        # the loss is reduced over ranks already; rank 0's copy makes every rank's decisions bit-identical
        loss = trainer.strategy.broadcast(float(trainer.callback_metrics["val/loss"]), src=0)
        value = loss if self.monitor_key == "val/loss" else trainer.strategy.broadcast(
            float(trainer.callback_metrics.get(self.monitor_key, math.nan)), src=0)
        pretraining, epoch, step = check_position(trainer)
        if pretraining:
            self.zero_shot_val_loss, self.zero_shot_value = loss, value
        self.losses.append(loss)
        self.values.append(value)
        self.checks += 1
        self.last_step = step
        window = self.values[-self.smoothing :]
        score = sum(window) / len(window)
        if pretraining or score < self.best_score - self.min_delta:
            self.best_score, self.best_val_loss, self.best_value = score, loss, value
            self.best_epoch, self.best_step, self.wait = epoch, step, 0
            if trainer.is_global_zero:
                self._save(pl_module)
            trainer.strategy.barrier("best_weights_saved")  # other ranks may restore_best from these files
        elif math.isfinite(loss):
            self.wait += 1
            if self.wait >= self.patience:
                self.stop_reason = "early_stopping"
                trainer.should_stop = True
        if not math.isfinite(loss):
            self.stop_reason = "diverged"
            trainer.should_stop = True

    def _save(self, pl_module: MoiraiFineTuner) -> None:
        # write next to the target, then swap: a kill mid-write never leaves a half checkpoint as "best"
        tmp = self.best_dir.with_name(self.best_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_plain(pl_module.module, tmp)  # LoRA: merged, a plain directory the forecast class loads
        old = self.best_dir.with_name(self.best_dir.name + ".old")
        if self.best_dir.exists():
            self.best_dir.rename(old)
        tmp.rename(self.best_dir)
        shutil.rmtree(old, ignore_errors=True)

    def restore_best(self, pl_module: MoiraiFineTuner) -> None:
        """Load the selected weights back into the module (the job's result)."""
        from safetensors.torch import load_file

        state = load_file(str(self.best_dir / "model.safetensors"), device=str(pl_module.device))
        load_plain(pl_module.module, state)

    def state_dict(self) -> dict[str, Any]:
        keys = ("losses", "best_score", "best_val_loss", "best_epoch", "best_step", "wait", "stop_reason",
                "zero_shot_val_loss", "values", "best_value", "zero_shot_value", "checks", "last_step")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for k, v in state_dict.items():
            setattr(self, k, v)


class DivergenceGuard(L.Callback):
    """Stops training when the loss has become NaN or infinite. The flag lives on the device and is
    read every `every` steps, so healthy steps pay no host synchronisation."""

    def __init__(self, every: int = 10):
        self.every = every
        self.diverged = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: MoiraiFineTuner, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not (trainer.global_step % self.every == 0 or trainer.is_last_batch):
            return
        # all ranks stop together (any rank's NaN counts): one rank stopping alone leaves the others waiting
        if trainer.strategy.reduce_boolean_decision(pl_module.diverged(), all=False):
            self.diverged = True
            trainer.should_stop = True
