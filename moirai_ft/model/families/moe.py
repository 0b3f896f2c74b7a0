"""Moirai-MoE (MoiraiMoEModule, MoiraiMoEForecast): a decoder-only transformer with a causal mask whose
feed-forward blocks are mixtures of 32 experts (2 per token), and Moirai 1.x's mixture distribution head
(`param_proj`) at every position.

Objective: the autoregressive mixture NLL. The alignment is the one MoiraiMoEForecast uses, and it is
*not* Moirai 1.x's: MoiraiMoEForecast samples the first horizon patch from the distribution at the
*last context* position of each variate (`preds[..., assign_index, :] = preds[..., pred_index, :]`,
pred_index = the last context token of each variate), then each further horizon patch from the
distribution at the variate's patch before it. So the distribution of the token at time t of variate v
forecasts the patch at time t + 1 of variate v, and training scores it there (decoder.targets_ahead: by
sample, variate and time id, not sequence adjacency, since the forecast class lays out all targets'
contexts before all their horizons). Fine-tuning with uni2ts's MoiraiFinetune scores position t on patch t
(a masked encoder's alignment), which teaches the model to predict the patch it is given, one patch late
at forecast time: the misaligned fine-tunes reported on uni2ts #209 (the maintainers say on #147 that the
MoE objective differs from 1.x's).

Every position whose next patch is a target's horizon patch is scored with uni2ts's PackedNLLLoss
(unobserved values and padding excluded; covariates are inputs, never scored). The scaler sees the
context only, as in the forecast's first step; the horizon patches are given as inputs (teacher
forcing), where the forecast feeds back its own samples.

Known and past covariates are laid out by MoiraiMoEForecast._convert (feat_dynamic_real,
past_feat_dynamic_real), in training and in the forecast. The forecast is MoiraiMoEForecast's own forward
on the same windows, under the evaluation seed.
"""

from __future__ import annotations

import functools

import torch
from jaxtyping import Float, Int
from omegaconf import DictConfig
from torch import Tensor
from uni2ts.distribution import (
    LogNormalOutput,
    MixtureOutput,
    NegativeBinomialOutput,
    NormalFixedScaleOutput,
    StudentTOutput,
)
from uni2ts.loss.packed import PackedNLLLoss
from uni2ts.model.moirai_moe import MoiraiMoEForecast, MoiraiMoEModule

from moirai_ft.data.windows import Batch, Windows, WindowSpec
from moirai_ft.model.families.decoder import (
    CONVERTED, context_inputs, convert, covariate_dims, gather_ahead, targets_ahead,
)
from moirai_ft.model.family import ModelFamily, encoder_kwargs
from moirai_ft.model.fast_path import distribution_validation


def _mixture() -> MixtureOutput:
    return MixtureOutput([StudentTOutput(), NormalFixedScaleOutput(), NegativeBinomialOutput(), LogNormalOutput()])


def forecaster(
    module: MoiraiMoEModule, spec: WindowSpec, num_variates: int, num_samples: int = 100, covariates: tuple[int, int] = (0, 0)
) -> MoiraiMoEForecast:
    """uni2ts's forecast class around `module`, for windows of `spec` with (known, past) covariates."""
    return MoiraiMoEForecast(
        prediction_length=spec.prediction_length, target_dim=num_variates, feat_dynamic_real_dim=covariates[0],
        past_feat_dynamic_real_dim=covariates[1], context_length=spec.context_length, module=module,
        patch_size=spec.patch_size, num_samples=num_samples,
    )


@functools.lru_cache(maxsize=8)
def _layout(spec: WindowSpec, num_variates: int, covariates: tuple[int, int]) -> MoiraiMoEForecast:
    """A forecast class to lay out windows with: its `_convert` reads the hparams and the largest patch
    size (the windows' max_patch_size, from model.patch_sizes), never its minimal module's weights."""
    module = MoiraiMoEModule(
        distr_output=_mixture(), d_model=64, d_ff=64, num_layers=0, patch_sizes=(spec.max_patch_size,),
        max_seq_len=1, attn_dropout_p=0.0, dropout_p=0.0,
    )
    return forecaster(module, spec, num_variates, covariates=covariates)


class MoiraiMoE(ModelFamily):
    name = "moe"
    title = "Moirai-MoE"
    supports_covariates = True  # MoiraiMoEForecast's own layout of feat_dynamic_real / past_feat_dynamic_real
    module_class = MoiraiMoEModule
    head = ("param_proj",)  # the distribution head
    config_keys = frozenset({"distr_output", "patch_sizes", "max_seq_len", "d_ff"})

    def __init__(self) -> None:
        self._nll = PackedNLLLoss()

    def random_module(self, model_cfg: DictConfig) -> MoiraiMoEModule:
        module = MoiraiMoEModule(
            distr_output=_mixture(),
            d_ff=model_cfg.d_ff,
            patch_sizes=tuple(model_cfg.patch_sizes),
            **encoder_kwargs(model_cfg),
        )
        # the experts' routing centroids are an uninitialised buffer (torch.empty) in uni2ts, filled only by
        # a checkpoint: draw them from the seeded generator, so a random model is reproducible and finite
        with torch.no_grad():
            module.encoder.centroid.normal_()
        return module

    def batch(self, windows: Windows, idx: Int[Tensor, "batch"]) -> Batch:
        batch = convert(_layout(windows.spec, windows.num_variates, covariate_dims(windows)), windows, idx)
        batch["patch_size"] = torch.full_like(batch["time_id"], windows.spec.patch_size)
        return batch

    def loss(self, module: MoiraiMoEModule, batch: Batch) -> Float[Tensor, ""]:
        with distribution_validation(False):
            distr = module(**{k: batch[k] for k in CONVERTED}, patch_size=batch["patch_size"])
            # the distribution at time t of a variate forecasts its patch at time t + 1 (the module docstring)
            position, scored = targets_ahead(batch, 1)
            return self._nll(
                pred=distr,
                target=gather_ahead(batch["target"], position)[:, :, 0],
                prediction_mask=scored[..., 0],
                observed_mask=gather_ahead(batch["observed_mask"], position)[:, :, 0],
                sample_id=batch["sample_id"],
                variate_id=batch["variate_id"],
            )

    def batch_paths(self, module: MoiraiMoEModule, windows: Windows, idx: Int[Tensor, "batch"], num_samples: int) -> Tensor:
        """MoiraiMoEForecast.forward's sampled paths."""
        forecast = forecaster(module, windows.spec, windows.num_variates, num_samples, covariate_dims(windows))
        paths = forecast(**context_inputs(windows, idx), num_samples=num_samples)  # (batch, sample, pred[, var])
        if paths.dim() == 3:
            paths = paths.unsqueeze(-1)
        return paths.permute(1, 0, 3, 2)  # (sample, batch, var, pred)
