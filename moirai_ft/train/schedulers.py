"""Learning-rate schedules: linear warmup from 0, then constant, cosine or linear decay.

The seed's section 4.2, as a multiplier of the base lr at each optimizer step. Decay reaches
`min_lr_ratio` exactly at the last training step and stays there.
"""

from __future__ import annotations

import math
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from moirai_ft.config.schema import SchedulerName


def lr_multiplier(step: int, name: str, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    if step < warmup_steps:
        return step / warmup_steps  # 0 at step 0: the first update uses lr 0, as in the seed's code
    if name == SchedulerName.constant:
        return 1.0
    # progress through the decay phase, 0 at the end of warmup, 1 at the last training step
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    if name == SchedulerName.cosine:
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if name == SchedulerName.linear:
        return min_lr_ratio + (1 - min_lr_ratio) * (1 - progress)
    raise ValueError(f"unknown scheduler {name!r}; choose one of {[s.value for s in SchedulerName]}")


def build_scheduler(
    optimizer: Optimizer, name: str, warmup_steps: int, total_steps: int, min_lr_ratio: float
) -> LambdaLR:
    fn = partial(
        lr_multiplier,
        name=SchedulerName(name),
        warmup_steps=warmup_steps,
        total_steps=total_steps,
        min_lr_ratio=min_lr_ratio,
    )
    return LambdaLR(optimizer, fn)


def warmup_step_count(warmup: int | float, total_steps: int) -> int:
    """warmup_steps as optimizer steps: an int is steps; a float in (0, 1) is that fraction of the run's
    total_steps (the seed's table gives warmup as 5-10% of the steps), at least one step of a run that has any."""
    if isinstance(warmup, float):
        return max(1, round(warmup * total_steps)) if total_steps > 0 else 0
    return int(warmup)
