"""`python train.py lr_find=true model=small pattern=freeze_ffn ...`: the learning-rate range test.

Lightning's learning-rate finder (lightning.pytorch.tuner.Tuner.lr_find): `lr_finder.num_steps`
optimizer steps of the configured model, pattern and data, the lr ramped exponentially from
`lr_finder.min_lr` to `lr_finder.max_lr`, stopping early once the loss exceeds 4x its best. Its
suggestion is the lr of the steepest fall of the smoothed loss. The job writes lr_find.png (the loss
against the lr, the suggestion marked), lr_find.json (lrs, losses, suggestion, the lrs to sweep) and a
metrics.json with status `lr_find`, and prints the `-m lr=...` values around the suggestion.
`-m pattern=full,freeze_ffn,head_only lr_find=true` gives one per pattern; analyze.py lists them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from omegaconf import DictConfig

from moirai_ft.artifacts import identity, write_json_atomic
from moirai_ft.config.saved import save_config
from moirai_ft.config.schema import validate
from moirai_ft.data.prepare import prepare
from moirai_ft.data.windows import IndexBatches, index_loader
from moirai_ft.model.load import count_params, load_module
from moirai_ft.model.patterns import apply_pattern
from moirai_ft.result import JobResult, Status
from moirai_ft.train.finetuner import MoiraiFineTuner

log = logging.getLogger(__name__)

LR_FIND_JSON = "lr_find.json"
LR_FIND_PNG = "lr_find.png"
STATUS = Status.lr_find.value  # metrics.json's status for a range test: a result, not a trained model
SWEEP_FACTORS = (1 / 3, 1.0, 3.0)  # the suggestion's neighbourhood on a log scale, for the next -m


def sweep_values(suggestion: float) -> list[float]:
    """lrs to sweep around the suggestion, rounded to 2 significant digits."""
    return [float(f"{suggestion * f:.2g}") for f in SWEEP_FACTORS]


def run_lr_find(cfg: DictConfig, job_dir: Path) -> dict[str, Any]:
    started = time.time()
    validate(cfg)
    job_dir = Path(job_dir)
    save_config(cfg, job_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = prepare(cfg)
    module = apply_pattern(load_module(cfg.model), cfg.pattern)
    trainable, total = count_params(module)
    steps = cfg.lr_finder.num_steps
    order = IndexBatches(len(data.train), cfg.batch_size, True, cfg.seed, cfg.steps_per_epoch)
    # constant schedule: the finder replaces it with its own exponential ramp
    finetuner = MoiraiFineTuner(module, data.train, data.val, order, lr=cfg.lr_finder.min_lr,
                                weight_decay=cfg.weight_decay, scheduler="constant", warmup_steps=0,
                                total_steps=steps, min_lr_ratio=1.0, compile=cfg.hardware.compile)
    trainer = L.Trainer(
        default_root_dir=job_dir, accelerator=cfg.hardware.accelerator, devices=1, precision=cfg.hardware.precision,
        gradient_clip_val=cfg.gradient_clip, gradient_clip_algorithm="norm", max_steps=steps,
        limit_train_batches=len(order), limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    from lightning.pytorch.tuner import Tuner

    finder = Tuner(trainer).lr_find(
        finetuner, train_dataloaders=index_loader(order), min_lr=cfg.lr_finder.min_lr, max_lr=cfg.lr_finder.max_lr,
        num_training=steps, mode="exponential", update_attr=False,
    )
    lrs = [float(v) for v in finder.results["lr"]]
    losses = [float(v) for v in finder.results["loss"]]
    suggestion = steepest_fall(lrs, losses)
    figure = finder.plot(suggest=False)
    if suggestion is not None:
        figure.axes[0].axvline(suggestion, color="red", linestyle="--", label=f"suggestion {suggestion:.2g}")
        figure.axes[0].legend()
    figure.savefig(job_dir / LR_FIND_PNG, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(figure)
    sweep = sweep_values(suggestion) if suggestion is not None else []
    result = {"lrs": lrs, "losses": losses, "suggestion": suggestion, "sweep": sweep,
              "min_lr": cfg.lr_finder.min_lr, "max_lr": cfg.lr_finder.max_lr, "num_steps": steps}
    write_json_atomic(job_dir / LR_FIND_JSON, result)
    if suggestion is None:
        message = "lr_find: no suggestion (the loss never fell); widen lr_finder.min_lr/max_lr or raise lr_finder.num_steps"
    else:
        message = (f"lr_find: suggestion {suggestion:.3g} for model={identity(cfg)['model']} "
                   f"pattern={identity(cfg)['pattern']}; sweep around it: -m lr={','.join(f'{v:g}' for v in sweep)}")
    print(message, flush=True)
    log.info(message)
    return JobResult(
        **identity(cfg), status=STATUS, lr_suggestion=suggestion, lr_sweep=sweep,
        lr_find_steps=len(lrs), trainable_params=trainable, total_params=total,
        wall_s=round(time.time() - started, 3),
    ).to_dict()


def steepest_fall(lrs: list[float], losses: list[float]) -> float | None:
    """The lr where the (finder's smoothed) loss falls fastest per decade of lr, before its minimum.

    Not Lightning's `suggestion()`: that one differentiates with respect to the lr itself, which on an
    exponential ramp favours the smallest lrs (a step there is tiny in lr, so noise looks steep). The
    first tenth of the ramp is skipped, as Lightning does: its smoothing starts from one batch.
    None when the loss never falls."""
    lr, loss = np.log10(np.asarray(lrs, float)), np.asarray(losses, float)
    if len(lr) < 5 or not np.isfinite(loss).any():
        return None
    skip = max(len(lr) // 10, 1)
    end = skip + int(np.nanargmin(loss[skip:])) + 1  # past the minimum the loss only rises
    if end - skip < 3:
        return None
    slope = np.gradient(loss[skip:end], lr[skip:end])
    i = int(np.nanargmin(slope))
    return float(lrs[skip + i]) if slope[i] < 0 else None
