"""What the decoder-only families (Moirai 2.0, Moirai-MoE) share: their windows are laid out by their
uni2ts forecast class's own input conversion (`_convert`), so training sees exactly the token layout,
time ids and sample ids the forecast class builds at prediction time; and the pairing of each position
with the patches it forecasts.

The conversion lays a sample out as every target's context, then every target's horizon, then the known
covariates (context, horizon), then the past covariates (context): `(dim seq)` per block. So a series'
last context token is not next to its own first horizon patch once there are two targets, and the
pairing cannot be "position t + d". Both forecast classes read the forecast of a variate's horizon from
that variate's last context token (and, rolling out, from its latest horizon token), and their attention
is causal in the time id: the pairing is by (sample, variate, time id) (`targets_ahead`).
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from moirai_ft.data.windows import Batch, Windows
from moirai_ft.model.compat import forecast_convert

CONVERTED = ("target", "observed_mask", "sample_id", "time_id", "variate_id", "prediction_mask")
_ID_BITS = 20  # variate ids and time ids stay below 2**20 (max_dim, max_seq_len): one int64 key per triple


def covariate_dims(windows: Windows) -> tuple[int, int]:
    """(known, past) covariates per sample: the forecast class's feat_dynamic_real_dim and
    past_feat_dynamic_real_dim."""
    return (len(windows.known), len(windows.past)) if windows.has_covariates else (0, 0)


def _observed(x: Tensor) -> tuple[Tensor, Tensor]:
    """(batch, var, time) with NaN gaps -> (batch, time, var) values with gaps 0, and observed."""
    x = x.transpose(1, 2)
    observed = ~torch.isnan(x)
    return torch.where(observed, x, 0.0), observed


def forecast_inputs(windows: Windows, idx: Int[Tensor, "batch"]) -> dict[str, Tensor]:
    """The windows as a forecast class's arguments: (batch, time, variate) context and horizon, missing
    values 0 with observed False (the normalised scale's 0 is the train split's mean), is_pad over the
    `windows.pad` leading steps (a series shorter than the context at prediction time; else none); known
    covariates over context and horizon (feat_dynamic_real), past covariates over the context
    (past_feat_dynamic_real), when the windows have them."""
    x, observed = _observed(windows.raw(idx))  # (batch, ctx + pred, var)
    ctx = windows.spec.context_length
    is_pad = torch.zeros(x.shape[0], ctx, dtype=torch.bool, device=x.device)
    is_pad[:, : getattr(windows, "pad", 0)] = True  # steps before a short series' start (prediction time)
    inputs = {
        "past_target": x[:, :ctx],
        "past_observed_target": observed[:, :ctx],
        "past_is_pad": is_pad,
        "future_target": x[:, ctx:],
        "future_observed_target": observed[:, ctx:],
    }
    known, past = covariate_dims(windows)
    if known or past:
        known_x, past_x = windows.covariates_raw(idx)
        if known:
            inputs["feat_dynamic_real"], inputs["observed_feat_dynamic_real"] = _observed(known_x)
        if past:
            inputs["past_feat_dynamic_real"], inputs["past_observed_feat_dynamic_real"] = _observed(past_x)
    return inputs


def context_inputs(windows: Windows, idx: Int[Tensor, "batch"]) -> dict[str, Tensor]:
    """forecast_inputs without the horizon's true values: what the forecast class's forward takes."""
    return {k: v for k, v in forecast_inputs(windows, idx).items() if not k.startswith("future_")}


def convert(forecast: Any, windows: Windows, idx: Int[Tensor, "batch"]) -> Batch:
    """Context and horizon (the true values: teacher forcing) and the covariates in the forecast class's
    layout."""
    fields = forecast_convert(forecast, windows.spec.patch_size, **forecast_inputs(windows, idx))
    batch = dict(zip(CONVERTED, fields))
    batch["sample_id"] = batch["sample_id"].long()  # the conversion mixes int32 (targets) and int64 (covariates)
    return batch


def targets_ahead(batch: Batch, steps: int) -> tuple[Int[Tensor, "batch seq steps"], Bool[Tensor, "batch seq steps"]]:
    """Slot k of the token at time t of variate v forecasts the patch at time t + 1 + k of the same sample
    and variate, wherever that patch sits in the sequence. Returns, per position and slot, that patch's
    position and whether it is scored: it exists and is a target's horizon patch (prediction_mask; the
    covariates never are). Padding (sample_id 0) forecasts nothing. The context patches before the first
    one a target is observed in share time id 0 with it (the forecast class's time ids): of positions
    sharing a (sample, variate, time id), only the last forecasts, the one the forecast class reads."""
    sid, vid, tid = batch["sample_id"].long(), batch["variate_id"].long(), batch["time_id"].long()
    key = (sid << 2 * _ID_BITS) | (vid << _ID_BITS) | tid
    b, seq = key.shape
    live = sid != 0
    # the scored patches, sorted by key (unique: one horizon patch per sample, variate and time id)
    horizon = torch.where(batch["prediction_mask"].bool() & live, key, torch.iinfo(torch.long).max)
    sorted_key, order = horizon.sort(dim=1)
    wanted = (key[..., None] + torch.arange(1, steps + 1, device=key.device)).reshape(b, -1)
    at = torch.searchsorted(sorted_key, wanted).clamp(max=seq - 1)
    found = (sorted_key.gather(1, at) == wanted).reshape(b, seq, steps)
    position = order.gather(1, at).reshape(b, seq, steps)
    # the last position of each key: a stable sort keeps equal keys in sequence order
    all_sorted, all_order = key.sort(dim=1, stable=True)
    is_last = torch.cat([all_sorted[:, 1:] != all_sorted[:, :-1], torch.ones_like(all_sorted[:, :1], dtype=torch.bool)], 1)
    last = torch.zeros_like(live).scatter(1, all_order, is_last)
    return position, found & (live & last)[..., None]


def gather_ahead(x: Tensor, position: Int[Tensor, "batch seq steps"]) -> Tensor:
    """x's patches (batch, seq, patch) at `position`: (batch, seq, steps, patch)."""
    b, seq, steps = position.shape
    flat = position.reshape(b, -1, 1).expand(-1, -1, x.shape[-1])
    return x.gather(1, flat).reshape(b, seq, steps, x.shape[-1])
