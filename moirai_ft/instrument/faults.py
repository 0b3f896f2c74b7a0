"""Fault injection for the reliability tests: faults a CPU test machine cannot produce for real.

Read from the environment, so a test can arm them in a `train.py` subprocess; unset, they cost one
comparison per step. Never set them outside tests.
- MOIRAI_FT_INJECT_OOM_ABOVE=N: a training micro-batch of more than N windows raises CUDA's
  out-of-memory error, as a GPU too small for that batch would.
- MOIRAI_FT_INJECT_KILL_AT_STEP=N: the process SIGKILLs itself when optimizer step N begins, as a
  node failure or the OOM killer would, at a reproducible moment.
"""

from __future__ import annotations

import os
import signal

import torch


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


OOM_ABOVE = _int_env("MOIRAI_FT_INJECT_OOM_ABOVE")
KILL_AT_STEP = _int_env("MOIRAI_FT_INJECT_KILL_AT_STEP")


def maybe_inject(micro_batch: int, global_step: int) -> None:
    if OOM_ABOVE is not None and micro_batch > OOM_ABOVE:
        raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected: micro-batch {micro_batch} > {OOM_ABOVE})")
    if KILL_AT_STEP is not None and global_step == KILL_AT_STEP:
        os.kill(os.getpid(), signal.SIGKILL)
