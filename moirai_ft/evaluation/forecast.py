"""Forecasting with a module for the test evaluation: its family's quantiles and validation loss, on the
evaluation device in eval mode, and a fingerprint of its weights."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Iterator

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from moirai_ft.data.windows import Windows
from moirai_ft.model.families import family_of_module


def forecast_quantiles(
    module: torch.nn.Module,
    windows: Windows,
    batches: list[Int[Tensor, "batch"]],
    num_samples: int,
    seed: int,
    desc: str,
) -> Float[np.ndarray, "item level pred"]:
    """Quantiles (metrics.QUANTILE_LEVELS) per item, normalised scale: the module's family's forecast
    (for Moirai 1.x `num_samples` sampled paths). Runs on the module's device."""
    return family_of_module(module).forecast_quantiles(module, windows, batches, num_samples, seed, desc)


def validation_nll(module: torch.nn.Module, windows: Windows, batches: list[Int[Tensor, "batch"]]) -> float:
    """Mean validation loss of the module's family (Moirai 1.x: packed NLL), weighted as the fine-tuner's."""
    return family_of_module(module).validation_loss(module, windows, batches)


@contextlib.contextmanager
def evaluating_on(module: torch.nn.Module, device: torch.device) -> Iterator[torch.nn.Module]:
    """The module in eval mode on `device`; its device and mode are restored afterwards."""
    before, training = next(module.parameters()).device, module.training
    module.to(device).eval()
    try:
        yield module
    finally:
        module.to(before).train(training)


def eval_device(accelerator: str) -> torch.device:
    """The GPU when the job's hardware allows one and there is one. fp32 either way, as uni2ts
    evaluates: bf16 would coarsen the distribution's parameters and so the metrics."""
    if str(accelerator) != "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def fingerprint(module: torch.nn.Module) -> str:
    """A short hash of the weights: tells whether a rebuilt zero-shot model is the job's."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
