"""Counting the operations that make the host wait for the GPU, on any device (the CPU included).

On a GPU, an op whose result the host must read (`.item()`, `bool(tensor)`, `if tensor:`), or whose
output size depends on the data (`nonzero`, boolean-mask indexing, `masked_select`, `unique`), stops the
host until every queued kernel has run: the launch queue drains and the GPU idles between steps.
Those ops are the same on the CPU, so a TorchDispatchMode that sees every aten call can count them in a
CPU test, where no GPU sync can be observed directly.
"""

from __future__ import annotations

import traceback
import warnings
from collections import Counter
from typing import Any

import lightning as L
import torch
from torch.utils._python_dispatch import TorchDispatchMode

# ops that read a device value back to the host, or size their output by the data
_SYNC_OPS = frozenset(
    {
        "aten._local_scalar_dense.default",  # .item(), bool(t), int(t), float(t), `if t`
        "aten.nonzero.default",
        "aten.nonzero_static.default",  # not a sync itself, but flags a reach for one
        "aten.masked_select.default",
        "aten._unique2.default",
        "aten.unique_dim.default",
        "aten.unique_consecutive.default",
        "aten.repeat_interleave.Tensor",  # without output_size it reads the counts back
    }
)
_INDEX_OPS = frozenset({"aten.index.Tensor", "aten.index_put.default", "aten.index_put_.default", "aten._index_put_impl_.default"})
_OWN_FRAMES = ("torch/utils/_python_dispatch.py", "moirai_ft/instrument/host_sync.py", "torch/_tensor.py", "torch/overrides.py")


def _has_bool_index(args: tuple[Any, ...]) -> bool:
    """aten.index / index_put with a boolean mask: the kernel calls nonzero to find the positions."""
    indices = args[1] if len(args) > 1 else None
    return isinstance(indices, (list, tuple)) and any(
        isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices
    )


def _caller() -> str:
    """file:line of the innermost frame outside torch's dispatch plumbing: where the sync was asked for."""
    for frame in reversed(traceback.extract_stack()):
        name = frame.filename.replace("\\", "/")
        if not any(own in name for own in _OWN_FRAMES):
            parts = name.split("/site-packages/")
            return f"{parts[-1]}:{frame.lineno}"
    return "?"


class HostSyncCounter(TorchDispatchMode):
    """Counts host-synchronising aten calls while active; with `where=True` also by caller (slower)."""

    def __init__(self, where: bool = False):
        super().__init__()
        self.where = where
        self.ops: Counter[str] = Counter()
        self.callers: Counter[str] = Counter()
        self.calls = 0  # every aten call: in eager mode, about the number of kernel launches

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's signature
        self.calls += 1
        name = str(func)
        if name in _SYNC_OPS or (name in _INDEX_OPS and _has_bool_index(args)):
            self.ops[name] += 1
            if self.where:
                self.callers[f"{name} <- {_caller()}"] += 1
        return func(*args, **(kwargs or {}))


class CountStepSyncs(L.Callback):
    """Counts host synchronisations over whole iterations of the training loop: from the start of batch
    `first` to the start of batch `first + steps`, so the step, backward, clipping, optimizer, scheduler,
    logging and progress bar are all inside the window. `first` skips warm-up work (lazy state, the
    optimizer's first step)."""

    def __init__(self, first: int = 2, steps: int = 1, where: bool = False):
        self.first = first
        self.steps = steps
        self.counter = HostSyncCounter(where=where)
        self._active = False
        self.done = False
        # on a GPU, also torch's own sync detector, which sees what the CPU count cannot (a blocking
        # device-to-host copy such as .cpu() or .tolist()): the number of its warnings, else None
        self.cuda_syncs: int | None = None
        self._cuda_warnings: warnings.catch_warnings | None = None
        self._caught: list[warnings.WarningMessage] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if not self._active and not self.done and step == self.first:
            if pl_module.device.type == "cuda":
                self._cuda_warnings = warnings.catch_warnings(record=True)
                self._caught = self._cuda_warnings.__enter__()
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
            self.counter.__enter__()
            self._active = True
        elif self._active and step >= self.first + self.steps:
            self._stop()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active:  # the run ended inside the window: count what was seen, flag it as short
            self._stop()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active:  # a validation check is not part of a training step
            self._stop()

    def _stop(self) -> None:
        self.counter.__exit__(None, None, None)
        if self._cuda_warnings is not None:
            torch.cuda.set_sync_debug_mode("default")
            self._cuda_warnings.__exit__(None, None, None)
            self.cuda_syncs = sum("synchroniz" in str(w.message) for w in self._caught)
            self._cuda_warnings = None
        self._active = False
        self.done = True

    @property
    def per_step(self) -> float:
        return self.counter.total / self.steps

    @property
    def calls_per_step(self) -> float:
        return self.counter.calls / self.steps
