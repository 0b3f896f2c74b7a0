"""The lr actually applied by the optimizer at chosen steps matches each schedule's formula."""

from __future__ import annotations

import math

import lightning as L
import pytest

from conftest import compose_cfg
from moirai_ft.data.prepare import prepare
from moirai_ft.train.finetuner import MoiraiFineTuner
from moirai_ft.model.load import random_module
from moirai_ft.data.windows import IndexBatches, index_loader

LR, WARMUP, TOTAL, MIN_RATIO = 1e-3, 4, 12, 0.1


def expected(name: str, step: int) -> float:
    """The seed's section 4.2, written out independently, decaying to min at the last step (TOTAL-1)."""
    if step < WARMUP:
        return LR * step / WARMUP
    progress = (step - WARMUP) / (TOTAL - 1 - WARMUP)
    if name == "constant":
        return LR
    if name == "cosine":
        return LR * (MIN_RATIO + (1 - MIN_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))
    return LR * (MIN_RATIO + (1 - MIN_RATIO) * (1 - progress))


class LrRecorder(L.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.lrs.append(optimizer.param_groups[0]["lr"])  # the lr this update uses


@pytest.mark.parametrize("name", ["constant", "cosine", "linear"])
def test_applied_lr_matches_formula(name: str) -> None:
    cfg = compose_cfg([f"scheduler={name}", f"scheduler.min_lr_ratio={MIN_RATIO}"])
    data = prepare(cfg)
    module = random_module(cfg.model)
    order = IndexBatches(len(data.train), 4, shuffle=True, seed=0, steps_per_epoch=TOTAL)
    ft = MoiraiFineTuner(module, data.train, data.val, order, lr=LR, weight_decay=0.1, scheduler=name,
                         warmup_steps=WARMUP, total_steps=TOTAL, min_lr_ratio=cfg.scheduler.min_lr_ratio)
    rec = LrRecorder()
    trainer = L.Trainer(max_steps=TOTAL, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[rec])
    trainer.fit(ft, index_loader(order))
    assert len(rec.lrs) == TOTAL
    for step, lr in enumerate(rec.lrs):
        assert lr == pytest.approx(expected(name, step), rel=1e-9, abs=1e-15), (name, step)
    assert rec.lrs[0] == 0.0  # warmup starts from 0
    if name != "constant":
        assert rec.lrs[-1] == pytest.approx(LR * MIN_RATIO)  # reaches min_lr_ratio x lr at the last step
