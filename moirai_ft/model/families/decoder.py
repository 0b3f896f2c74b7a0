"""What the decoder-only families (Moirai 2.0, Moirai-MoE) share: their windows are laid out by their
uni2ts forecast class's own input conversion (`_convert`), so training sees exactly the token layout,
time ids and sample ids the forecast class builds at prediction time; and a shifted view of a sequence
(`ahead`), with which "position t predicts patch t + d" becomes an elementwise comparison."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from moirai_ft.data.windows import Batch, Windows
from moirai_ft.errors import UserError
from moirai_ft.model.compat import forecast_convert

CONVERTED = ("target", "observed_mask", "sample_id", "time_id", "variate_id", "prediction_mask")


def forecast_inputs(windows: Windows, idx: Int[Tensor, "batch"]) -> dict[str, Tensor]:
    """The windows as a forecast class's arguments: (batch, time, variate) context and horizon, missing
    values 0 with observed False (the normalised scale's 0 is the train split's mean), is_pad over the
    `windows.pad` leading steps (a series shorter than the context at prediction time), else none."""
    if getattr(windows, "has_covariates", False):
        raise UserError("covariates (data.known_covariates / data.past_covariates) are implemented for Moirai 1.x only")
    x = windows.raw(idx).transpose(1, 2)  # (batch, ctx + pred, var)
    observed = ~torch.isnan(x)
    x = torch.where(observed, x, 0.0)
    ctx = windows.spec.context_length
    is_pad = torch.zeros(x.shape[0], ctx, dtype=torch.bool, device=x.device)
    is_pad[:, : getattr(windows, "pad", 0)] = True  # steps before a short series' start (prediction time)
    return {
        "past_target": x[:, :ctx],
        "past_observed_target": observed[:, :ctx],
        "past_is_pad": is_pad,
        "future_target": x[:, ctx:],
        "future_observed_target": observed[:, ctx:],
    }


def convert(forecast: Any, windows: Windows, idx: Int[Tensor, "batch"]) -> Batch:
    """Context and horizon (the true values: teacher forcing) in the forecast class's layout."""
    inputs = forecast_inputs(windows, idx)
    fields = forecast_convert(forecast, windows.spec.patch_size, **inputs)
    return dict(zip(CONVERTED, fields))


def ahead(x: Tensor, d: int, fill: float | bool = 0) -> Tensor:
    """x shifted d positions back along the sequence axis (dim 1): ahead(x, d)[:, t] = x[:, t + d]; the
    last d positions, which have nothing d ahead, hold `fill`."""
    pad = torch.full_like(x[:, :d], fill)
    return torch.cat([x[:, d:], pad], dim=1)


def same_series_ahead(batch: Batch, d: int) -> Bool[Tensor, "batch seq"]:
    """Position t + d is the same sample and variate as t, so (sequences are variate-major, time inside)
    the patch d steps after t's; padding (sample_id 0) is no series."""
    sid, vid = batch["sample_id"], batch["variate_id"]
    return (ahead(sid, d, -1) == sid) & (ahead(vid, d, -1) == vid) & (sid != 0)
