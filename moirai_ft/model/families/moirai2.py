"""Moirai 2.0 (Moirai2Module, Moirai2Forecast): a decoder-only transformer with a causal mask, one patch
size, and an output head (`out_proj`) giving nine quantiles of each of the next `num_predict_token`
patches at every position.

Objective (uni2ts 2.0.0 ships no fine-tuning module for it; this is what its module and forecast class
imply): position t's prediction slot k is the forecast of patch t + 1 + k, because Moirai2Forecast reads
the forecast of the first horizon patch from slot 0 of the *last context* position, of the second from
slot 1, and so on. Every (t, k) whose target patch is a horizon patch of the same series is scored with
uni2ts's quantile (pinball) loss, PackedQuantileMAELoss, on the scaled target the module returns in
training mode; unobserved values and padding are excluded. The scaler sees the context only (the
horizon is marked prediction_mask, as in the forecast), and the horizon's own patches are given as
inputs (teacher forcing), which is what the forecast feeds back when it rolls out beyond
num_predict_token patches.

The forecast is Moirai2Forecast's own forward on the same windows: its quantiles are the job's.
"""

from __future__ import annotations

import functools

import torch
from jaxtyping import Float, Int
from omegaconf import DictConfig
from torch import Tensor
from uni2ts.loss.packed import PackedQuantileMAELoss
from uni2ts.model.moirai2 import Moirai2Forecast, Moirai2Module

from moirai_ft.data.windows import Batch, Windows, WindowSpec
from moirai_ft.errors import UserError
from moirai_ft.model.families.decoder import CONVERTED, ahead, convert, forecast_inputs, same_series_ahead
from moirai_ft.model.family import ModelFamily, encoder_kwargs
from moirai_ft.scores import QUANTILE_LEVELS


def forecaster(module: Moirai2Module, spec: WindowSpec, num_variates: int) -> Moirai2Forecast:
    """uni2ts's forecast class around `module`, for windows of `spec` (it leaves the module's mode as it was)."""
    training = module.training
    forecast = Moirai2Forecast(
        prediction_length=spec.prediction_length, target_dim=num_variates, feat_dynamic_real_dim=0,
        past_feat_dynamic_real_dim=0, context_length=spec.context_length, module=module,
    )
    module.train(training)  # Moirai2Forecast.__init__ puts its module in eval mode
    return forecast


@functools.lru_cache(maxsize=8)
def _layout(spec: WindowSpec, num_variates: int) -> Moirai2Forecast:
    """A forecast class to lay out windows with: its `_convert` reads only the hparams and the patch size,
    never the (minimal) module it holds."""
    module = Moirai2Module(
        d_model=64, d_ff=64, num_layers=0, patch_size=spec.patch_size, max_seq_len=1,
        attn_dropout_p=0.0, dropout_p=0.0,
    )
    return forecaster(module, spec, num_variates)


class Moirai2(ModelFamily):
    name = "moirai2"
    title = "Moirai 2.0"
    module_class = Moirai2Module
    head = ("out_proj",)  # the quantile head (not the attention layers' out_proj: prefix match)
    config_keys = frozenset({"patch_size", "num_predict_token", "quantile_levels"})
    model_options = ("moirai2_small", "tiny_moirai2")

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
        return convert(_layout(windows.spec, windows.num_variates), windows, idx)

    def loss(self, module: Moirai2Module, batch: Batch) -> Float[Tensor, ""]:
        preds, scaled = module(**{k: batch[k] for k in CONVERTED}, training_mode=True)
        b, seq, _ = scaled.shape
        k_ahead, q, p = module.num_predict_token, module.num_quantiles, module.patch_size
        preds = preds.reshape(b, seq, k_ahead, q * p)  # out_proj's "(predict_token num_quantiles patch_size)"
        pred, target, observed, scored = [], [], [], []
        for k in range(k_ahead):  # slot k of position t forecasts patch t + 1 + k
            d = 1 + k
            pred.append(preds[:, :, k])
            target.append(ahead(scaled, d))
            observed.append(ahead(batch["observed_mask"], d, False))
            scored.append(ahead(batch["prediction_mask"], d, False) & same_series_ahead(batch, d))
        # every (position, slot) pair is one more token of its series: uni2ts's packed reduction then
        # averages over each series' scored values and over the series
        return PackedQuantileMAELoss(quantile_levels=module.quantile_levels)(
            pred=torch.cat(pred, 1),
            target=torch.cat(target, 1),
            prediction_mask=torch.cat(scored, 1),
            observed_mask=torch.cat(observed, 1),
            sample_id=batch["sample_id"].repeat(1, k_ahead),
            variate_id=batch["variate_id"].repeat(1, k_ahead),
        )

    def batch_quantiles(self, module: Moirai2Module, windows: Windows, idx: Int[Tensor, "batch"], num_samples: int) -> Tensor:
        """Moirai2Forecast.forward on the windows' context: (batch, level, pred[, var]) -> (batch, var, level, pred)."""
        if tuple(module.quantile_levels) != QUANTILE_LEVELS:
            raise UserError(f"the checkpoint's quantile levels {module.quantile_levels} are not {QUANTILE_LEVELS}")
        inputs = forecast_inputs(windows, idx)
        q = forecaster(module, windows.spec, windows.num_variates)(
            inputs["past_target"], inputs["past_observed_target"], inputs["past_is_pad"]
        )
        return q.unsqueeze(1) if q.dim() == 3 else q.permute(0, 3, 1, 2)
