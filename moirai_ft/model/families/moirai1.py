"""Moirai 1.x (MoiraiModule): a masked encoder whose horizon patches are replaced by a learned mask token
and whose output is a mixture distribution per patch. uni2ts's MoiraiFinetune objective: the packed
NLL of the mixture on the horizon values; its MoiraiForecast samples paths from the same distribution."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float, Int
from omegaconf import DictConfig
from torch import Tensor
from torch.distributions import Distribution
from uni2ts.distribution import (
    LogNormalOutput,
    MixtureOutput,
    NegativeBinomialOutput,
    NormalFixedScaleOutput,
    StudentTOutput,
)
from uni2ts.loss.packed import PackedNLLLoss
from uni2ts.model.moirai import MoiraiModule

from moirai_ft.config.schema import CompileMode
from moirai_ft.data.windows import Batch, Windows
from moirai_ft.model.compat import forward_parts
from moirai_ft.model.family import ModelFamily, encoder_kwargs
from moirai_ft.model.fast_path import compile_forward, distribution_validation

MODEL_FIELDS = ("target", "observed_mask", "sample_id", "time_id", "variate_id", "prediction_mask", "patch_size")
LOSS_FIELDS = ("target", "prediction_mask", "observed_mask", "sample_id", "variate_id")


def _map_tensors(fn: Callable[[Tensor], Tensor], tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _map_tensors(fn, v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map_tensors(fn, v) for v in tree)
    return fn(tree)


def horizon_tokens(windows: Windows, device: torch.device) -> Int[Tensor, "horizon_tokens"]:
    """Sequence positions of the forecast variates' prediction tokens, in the windows' own layout."""
    return windows.horizon_positions(device)


def horizon_distribution(module: MoiraiModule, batch: Batch, tokens: Int[Tensor, "t"], patch_size: int) -> Distribution:
    """The distribution MoiraiModule returns, restricted to the horizon patches' first `patch_size`
    values. Sampling the whole sequence at max_patch_size would draw about 25x more values (19 tokens
    x 128 for 3 x 32 wanted at the defaults). The parameters and the scaler's loc/scale are captured
    from the module's own forward pass with hooks, so the forward pass is uni2ts's, unchanged."""
    params, loc, scale = forward_parts(module, **{k: batch[k] for k in MODEL_FIELDS})  # hooks: model/compat.py
    b, seq = batch["target"].shape[:2]

    def cut(t: Tensor) -> Tensor:  # (batch, seq, max_patch, ...) leaves; scalars (fixed scales) broadcast
        return t[:, tokens, :patch_size] if t.dim() >= 3 and t.shape[:2] == (b, seq) else t

    params = _map_tensors(cut, params)
    return module.distr_output.distribution(params, loc=loc[:, tokens], scale=scale[:, tokens])


class Moirai1(ModelFamily):
    name = "moirai1"
    title = "Moirai 1.x"
    supports_covariates = True  # CovariateWindows: MoiraiForecast's own layout of feat_dynamic_real
    module_class = MoiraiModule
    head = ("param_proj",)  # the distribution head
    config_keys = frozenset({"distr_output", "patch_sizes", "max_seq_len"})  # and no d_ff (MoE has one)

    def __init__(self) -> None:
        self._nll = PackedNLLLoss()

    def random_module(self, model_cfg: DictConfig) -> MoiraiModule:
        """A randomly initialised MoiraiModule with the architecture of Moirai 1.1-R (mixture output)."""
        return MoiraiModule(
            distr_output=MixtureOutput(
                [StudentTOutput(), NormalFixedScaleOutput(), NegativeBinomialOutput(), LogNormalOutput()]
            ),
            patch_sizes=tuple(model_cfg.patch_sizes),
            **encoder_kwargs(model_cfg),
        )

    def nll(self, pred: Distribution, batch: Batch) -> Tensor:
        return self._nll(pred=pred, **{k: batch[k] for k in LOSS_FIELDS})

    def loss(self, module: MoiraiModule, batch: Batch) -> Float[Tensor, ""]:
        # argument checks on the model's own outputs never fail and each costs a host synchronisation
        with distribution_validation(False):
            return self.nll(module(**{k: batch[k] for k in MODEL_FIELDS}), batch)

    def train_loss(self, module: MoiraiModule, compile_mode: CompileMode | str) -> Callable[[Batch], Tensor]:
        forward = compile_forward(module, compile_mode) or (lambda b: module(**{k: b[k] for k in MODEL_FIELDS}))

        def loss(batch: Batch) -> Tensor:
            with distribution_validation(False):
                return self.nll(forward(batch), batch)

        return loss

    def check_compile(self, compile_mode: CompileMode | str) -> None:
        pass  # fast_path.compile_forward captures MoiraiModule.forward

    def batch_paths(self, module: MoiraiModule, windows: Windows, idx: Int[Tensor, "batch"], num_samples: int) -> Tensor:
        """uni2ts's forecast: `num_samples` paths drawn from the horizon distribution."""
        s = windows.spec
        tokens = horizon_tokens(windows, idx.device)
        samples = horizon_distribution(module, windows.batch(idx), tokens, s.patch_size).sample(torch.Size((num_samples,)))
        # (sample, batch, var * pred_tokens, patch) -> (sample, batch, var, pred) without the pad
        return samples.reshape(num_samples, samples.shape[1], windows.num_variates, -1)[..., : s.prediction_length]
