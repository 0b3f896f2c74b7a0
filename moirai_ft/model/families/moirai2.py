"""Moirai 2.0 (Moirai2Module, Moirai2Forecast): a decoder-only transformer with a causal mask, one patch
size, and an output head (`out_proj`) giving nine quantiles of each of the next `num_predict_token`
patches at every position.

Objective (uni2ts 2.0.0 ships no fine-tuning module for it; this is what its module and forecast class
imply): slot k of the token at time t of variate v is the forecast of that variate's patch at time
t + 1 + k, because Moirai2Forecast reads the forecast of a variate's first horizon patch from slot 0 of
the variate's *last context* token, of the second from slot 1, and so on (and, rolling out, from the
variate's latest horizon token). The pairs are found by sample, variate and time id
(decoder.targets_ahead), not by sequence adjacency: the forecast class lays out every target's context
before every target's horizon. Every pair whose patch is a target's horizon patch is scored with uni2ts's
quantile (pinball) loss, PackedQuantileMAELoss, on the scaled target the module returns in training mode;
unobserved values, padding and covariates are excluded. The scaler sees the context only (the horizon is
marked prediction_mask, as in the forecast), and the horizon's own patches are given as inputs (teacher
forcing), which is what the forecast feeds back when it rolls out beyond num_predict_token patches.

Known and past covariates are laid out by Moirai2Forecast._convert (feat_dynamic_real,
past_feat_dynamic_real), in training and in the forecast.

The forecast is Moirai2Forecast's own forward when the horizon is within num_predict_token patches. Beyond
that, Moirai2Forecast rolls out recursively, and uni2ts 2.0.0's rollout fails for more than one target
(its first feedback reads the predictions of all variates as those of one: "Shape mismatch, 14 != 2" for 7
variates x 2 tokens). `rollout` is that recursion with every variate's tokens fed back: for one target it
is Moirai2Forecast.forward operation for operation (tests/model/test_decoder_multivariate.py checks equality).
"""

from __future__ import annotations

import functools

import torch
from einops import rearrange, repeat
from jaxtyping import Float, Int
from omegaconf import DictConfig
from torch import Tensor
from uni2ts.loss.packed import PackedQuantileMAELoss
from uni2ts.model.moirai2 import Moirai2Forecast, Moirai2Module

from moirai_ft.data.windows import Batch, Windows, WindowSpec
from moirai_ft.errors import UserError
from moirai_ft.model.compat import forecast_convert
from moirai_ft.model.families.decoder import (
    CONVERTED, context_inputs, convert, covariate_dims, gather_ahead, targets_ahead,
)
from moirai_ft.model.family import ModelFamily, encoder_kwargs
from moirai_ft.scores import QUANTILE_LEVELS


def forecaster(module: Moirai2Module, spec: WindowSpec, num_variates: int, covariates: tuple[int, int] = (0, 0)) -> Moirai2Forecast:
    """uni2ts's forecast class around `module`, for windows of `spec` with (known, past) covariates (it
    leaves the module's mode as it was)."""
    training = module.training
    forecast = Moirai2Forecast(
        prediction_length=spec.prediction_length, target_dim=num_variates, feat_dynamic_real_dim=covariates[0],
        past_feat_dynamic_real_dim=covariates[1], context_length=spec.context_length, module=module,
    )
    module.train(training)  # Moirai2Forecast.__init__ puts its module in eval mode
    return forecast


def rollout(forecast: Moirai2Forecast, **inputs: Tensor) -> Float[Tensor, "batch level pred *var"]:
    """Moirai2Forecast.forward (uni2ts 2.0.0) for any number of targets: the first num_predict_token patches
    of each target from its last context token; beyond them, each of the nine quantiles of every target is
    fed back as a point forecast, the next patches read from each target's latest token, and their
    quantiles taken over the 9 x 9 values, as the forecast class does for one target."""
    m, target_dim = forecast.module, forecast.hparams.target_dim
    k_ahead, q, p = m.num_predict_token, m.num_quantiles, m.patch_size
    fields = forecast_convert(forecast, p, **inputs)
    ctx, pred = forecast.context_token_length(p), forecast.prediction_token_length(p)
    last_context = torch.arange(ctx - 1, target_dim * ctx, ctx)  # each target's last context token
    first_horizon = torch.arange(target_dim * ctx, target_dim * (ctx + pred), pred)  # and its first horizon token

    def read(preds: Tensor, source: Tensor, done: int, n: int) -> tuple[Tensor, Tensor]:
        """Slots 0..n-1 of each target's `source` token: its horizon patches done..done+n-1, and their positions."""
        preds = rearrange(preds, "... (k q p) -> ... k q p", k=k_ahead, q=q, p=p)[..., source, :n, :, :]
        dest = (first_horizon[:, None] + done + torch.arange(n)).reshape(-1)
        return rearrange(preds, "... var k q p -> ... (var k) q p"), dest

    out = repeat(fields[0], "... p -> ... q p", q=q).clone()
    first, dest = read(m(*fields, training_mode=False), last_context, 0, min(pred, k_ahead))
    out[..., dest, :, :] = first
    if pred > k_ahead:
        # (batch, quantile path, ...): each quantile of the forecast so far, fed back as a point forecast
        target, observed, sample_id, time_id, variate_id, prediction_mask = (
            repeat(x, "b ... -> b q ...", q=q).clone() for x in fields
        )
        target[..., dest, :] = rearrange(first, "... t q p -> ... q t p")
        prediction_mask[..., dest] = False
        done = k_ahead
        while done < pred:
            n = min(k_ahead, pred - done)
            preds = m(target, observed, sample_id, time_id, variate_id, prediction_mask, training_mode=False)
            nxt, dest = read(preds, first_horizon + done - 1, done, n)
            nxt = rearrange(nxt, "... q_path t q p -> ... t (q_path q) p")
            levels = torch.tensor(m.quantile_levels, device=nxt.device, dtype=torch.float32)
            nxt = torch.quantile(nxt, levels, dim=-2)  # (level, batch, t, p)
            out[..., dest, :, :] = rearrange(nxt, "q ... p -> ... q p")
            target[..., dest, :] = rearrange(nxt, "q b t p -> b q t p")
            prediction_mask[..., dest] = False
            done += n
    # Moirai2Forecast._format_preds: the targets' horizon tokens -> (batch, level, time, var)
    horizon = out[..., target_dim * ctx: target_dim * (ctx + pred), :, :]
    preds = rearrange(horizon, "... (var t) q p -> ... q (t p) var", var=target_dim)[..., : forecast.hparams.prediction_length, :]
    return preds.squeeze(-1)


@functools.lru_cache(maxsize=8)
def _layout(spec: WindowSpec, num_variates: int, covariates: tuple[int, int]) -> Moirai2Forecast:
    """A forecast class to lay out windows with: its `_convert` reads only the hparams and the patch size,
    never the (minimal) module it holds."""
    module = Moirai2Module(
        d_model=64, d_ff=64, num_layers=0, patch_size=spec.patch_size, max_seq_len=1,
        attn_dropout_p=0.0, dropout_p=0.0,
    )
    return forecaster(module, spec, num_variates, covariates)


class Moirai2(ModelFamily):
    name = "moirai2"
    title = "Moirai 2.0"
    supports_covariates = True  # Moirai2Forecast's own layout of feat_dynamic_real / past_feat_dynamic_real
    module_class = Moirai2Module
    head = ("out_proj",)  # the quantile head (not the attention layers' out_proj: prefix match)
    config_keys = frozenset({"patch_size", "num_predict_token", "quantile_levels"})

    def random_module(self, model_cfg: DictConfig) -> Moirai2Module:
        return Moirai2Module(
            d_ff=model_cfg.d_ff,
            patch_size=model_cfg.patch_sizes[0],
            num_predict_token=model_cfg.num_predict_token,
            quantile_levels=QUANTILE_LEVELS,
            **encoder_kwargs(model_cfg),
        )

    def preflight(self, spec: WindowSpec, num_variates: int, model_cfg: DictConfig) -> None:
        if len(model_cfg.patch_sizes) != 1:
            raise UserError(f"model.patch_sizes={list(model_cfg.patch_sizes)}: Moirai 2.0 has one patch size; give one")

    def batch(self, windows: Windows, idx: Int[Tensor, "batch"]) -> Batch:
        return convert(_layout(windows.spec, windows.num_variates, covariate_dims(windows)), windows, idx)

    def loss(self, module: Moirai2Module, batch: Batch) -> Float[Tensor, ""]:
        preds, scaled = module(**{k: batch[k] for k in CONVERTED}, training_mode=True)
        b, seq, _ = scaled.shape
        k_ahead = module.num_predict_token
        # slot k of the token at time t of a variate forecasts its patch at time t + 1 + k (module docstring)
        position, scored = targets_ahead(batch, k_ahead)
        # every (position, slot) pair is one more token of its series: uni2ts's packed reduction then
        # averages over each series' scored values and over the series
        flat = lambda x: x.reshape(b, seq * k_ahead, *x.shape[3:])  # noqa: E731 - (b, seq, k, ...) -> (b, seq*k, ...)
        return PackedQuantileMAELoss(quantile_levels=module.quantile_levels)(
            pred=preds.reshape(b, seq * k_ahead, -1),  # out_proj's "(predict_token num_quantiles patch_size)"
            target=flat(gather_ahead(scaled, position)),
            prediction_mask=flat(scored),
            observed_mask=flat(gather_ahead(batch["observed_mask"], position)),
            sample_id=batch["sample_id"].repeat_interleave(k_ahead, dim=1),
            variate_id=batch["variate_id"].repeat_interleave(k_ahead, dim=1),
        )

    def batch_quantiles(self, module: Moirai2Module, windows: Windows, idx: Int[Tensor, "batch"], num_samples: int) -> Tensor:
        """Moirai2Forecast.forward on the windows' context: (batch, level, pred[, var]) -> (batch, var, level, pred)."""
        if tuple(module.quantile_levels) != QUANTILE_LEVELS:
            raise UserError(f"the checkpoint's quantile levels {module.quantile_levels} are not {QUANTILE_LEVELS}")
        forecast = forecaster(module, windows.spec, windows.num_variates, covariate_dims(windows))
        q = rollout(forecast, **context_inputs(windows, idx))
        return q.unsqueeze(1) if q.dim() == 3 else q.permute(0, 3, 1, 2)
