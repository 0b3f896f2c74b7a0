"""Windows with column roles: targets forecast and scored, known covariates given over the horizon, past
covariates given over the context only.

A sample is laid out exactly as uni2ts's `MoiraiForecast._convert` lays out the same context and horizon
at inference (target = the targets, feat_dynamic_real = the known covariates over context and horizon,
past_feat_dynamic_real = the past covariates over the context), so what a model learns here is what it is
asked at prediction time:

    [targets' context tokens | targets' horizon tokens | known context | known horizon | past context]

each block variate by variate; covariates have prediction_mask 0, so the loss (PackedNLLLoss counts
prediction_mask & observed_mask tokens) scores the targets' horizon only; time ids follow the forecast
class (context patches numbered from the first one a target is observed in, the horizon after them).
tests/data/test_covariates.py checks every field against the forecast class's own conversion.

Mode S: one sample per (target, forecast start), each carrying every covariate; mode M: one sample per
forecast start holding every target and every covariate.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from moirai_ft.data.windows import Batch, WindowSpec
from moirai_ft.values import plain


class CovariateWindows:
    """The same interface as windows.Windows (len, locate, batch, to, num_variates, forecast_columns,
    horizon_positions), with `targets`, `known` and `past` the series rows of each role."""

    def __init__(
        self,
        series: Float[Tensor, "var time"],
        starts: Int[Tensor, "n_starts"],
        spec: WindowSpec,
        mode: str,
        targets: Int[Tensor, "t"],
        known: Int[Tensor, "k"],
        past: Int[Tensor, "p"],
        pad: int = 0,
    ):
        self.series = series
        # leading context steps before the data's start (a short series at prediction time): uni2ts's
        # past_is_pad; a context patch of padding only is no token of the sample (sample_id 0)
        self.pad = pad
        self.starts = starts
        self.spec = spec
        self.mode = str(plain(mode))
        if self.mode not in ("S", "M"):
            raise ValueError(f"mode must be 'S' or 'M', got {mode!r}")
        device = series.device
        self.targets, self.known, self.past = (t.to(device=device, dtype=torch.long) for t in (targets, known, past))
        self._ctx = torch.arange(-spec.context_length, 0, device=device)
        self._hor = torch.arange(0, spec.prediction_length, device=device)

    def __len__(self) -> int:
        n = len(self.starts)
        return n * len(self.targets) if self.mode == "S" else n

    @property
    def num_variates(self) -> int:
        """Forecast (target) variates per sample."""
        return 1 if self.mode == "S" else len(self.targets)

    @property
    def forecast_columns(self) -> Int[Tensor, "t"]:
        return self.targets

    @property
    def has_covariates(self) -> bool:
        return len(self.known) + len(self.past) > 0

    def to(self, device: torch.device | str) -> "CovariateWindows":
        return CovariateWindows(
            self.series.to(device), self.starts.to(device), self.spec, self.mode, self.targets, self.known, self.past,
            self.pad,
        )

    def without_covariates(self) -> "CovariateWindows":
        """The same windows and targets with no covariate: the model asked without them."""
        empty = self.targets[:0]
        return CovariateWindows(self.series, self.starts, self.spec, self.mode, self.targets, empty, empty, self.pad)

    def locate(self, idx: Int[Tensor, "batch"]) -> tuple[Int[Tensor, "batch"], Int[Tensor, "batch"]]:
        """(target's table column, forecast start) of each window id; in mode M the column is 0."""
        n = len(self.starts)
        if self.mode == "S":
            return self.targets[idx // n], self.starts[idx % n]
        return torch.zeros_like(idx), self.starts[idx]

    def raw(self, idx: Int[Tensor, "batch"]) -> Float[Tensor, "batch var ctx_plus_pred"]:
        """The targets' unpadded values (NaN where missing), as windows.Windows.raw."""
        idx = idx.to(self.series.device)
        start = self.starts[idx % len(self.starts)] if self.mode == "S" else self.starts[idx]
        steps = start[:, None] + torch.cat([self._ctx, self._hor])
        return self.series[self._rows(idx)[:, :, None], steps[:, None, :]]

    def covariates_raw(self, idx: Int[Tensor, "batch"]) -> tuple[Float[Tensor, "batch k ctx_plus_pred"], Float[Tensor, "batch p ctx"]]:
        """The known covariates over context and horizon and the past covariates over the context, unpadded
        (NaN where missing): a forecast class's feat_dynamic_real and past_feat_dynamic_real."""
        idx = idx.to(self.series.device)
        start = self.starts[idx % len(self.starts)] if self.mode == "S" else self.starts[idx]
        known_steps, past_steps = start[:, None] + torch.cat([self._ctx, self._hor]), start[:, None] + self._ctx
        return self.series[self.known[:, None], known_steps[:, None, :]], self.series[self.past[:, None], past_steps[:, None, :]]

    def horizon_positions(self, device: torch.device) -> Int[Tensor, "horizon_tokens"]:
        """Sequence positions of the targets' horizon tokens, variate by variate."""
        s, v = self.spec, self.num_variates
        return torch.arange(v * s.context_tokens, v * s.tokens, device=device)

    def _rows(self, idx: Int[Tensor, "batch"]) -> Int[Tensor, "batch t"]:
        if self.mode == "S":
            return self.targets[idx // len(self.starts)][:, None]
        return self.targets[None, :].expand(len(idx), -1)

    def _patches(self, x: Float[Tensor, "batch var steps"], left: bool) -> tuple[Tensor, Tensor]:
        """(values, observed) as (batch, var * tokens, max_patch): NaN-padded to whole patches before a context
        (after a horizon), missing values zero and unobserved, the patch axis zero-padded to max_patch_size."""
        s = self.spec
        pad = -x.shape[-1] % s.patch_size
        x = torch.nn.functional.pad(x, (pad, 0) if left else (0, pad), value=float("nan"))
        observed = ~torch.isnan(x)
        x = torch.where(observed, x, 0.0)
        b, v, steps = x.shape
        extra = s.max_patch_size - s.patch_size
        shape = (b, v * (steps // s.patch_size), s.patch_size)
        return (
            torch.nn.functional.pad(x.reshape(shape), (0, extra)),
            torch.nn.functional.pad(observed.reshape(shape), (0, extra), value=False),
        )

    def batch(self, idx: Int[Tensor, "batch"]) -> Batch:
        idx = idx.to(self.series.device)
        start = self.starts[idx % len(self.starts)] if self.mode == "S" else self.starts[idx]
        ctx_steps, hor_steps = start[:, None] + self._ctx, start[:, None] + self._hor  # (batch, steps)
        rows = self._rows(idx)

        def gather(r: Tensor, steps: Tensor) -> Tensor:  # (batch, var) rows x (batch, steps) -> (batch, var, steps)
            return self.series[r[:, :, None], steps[:, None, :]]

        b = len(idx)
        known, past = self.known[None, :].expand(b, -1), self.past[None, :].expand(b, -1)
        blocks = [
            self._patches(gather(rows, ctx_steps), left=True),
            self._patches(gather(rows, hor_steps), left=False),
            self._patches(gather(known, ctx_steps), left=True),
            self._patches(gather(known, hor_steps), left=False),
            self._patches(gather(past, ctx_steps), left=True),
        ]
        target = torch.cat([v for v, _ in blocks], dim=1)
        observed_mask = torch.cat([o for _, o in blocks], dim=1)
        return {"target": target, "observed_mask": observed_mask, **self._ids(blocks[0][1], rows.shape[1])}

    def _ids(self, target_ctx_observed: Tensor, t: int) -> Batch:
        s = self.spec
        b, device = target_ctx_observed.shape[0], target_ctx_observed.device
        k, p = len(self.known), len(self.past)
        # MoiraiForecast._generate_time_id: a context patch counts from the first patch any target is observed
        # in (earlier ones share id 0); the horizon's ids follow the last context id
        seen = target_ctx_observed.reshape(b, t, s.context_tokens, -1).any(-1).any(1).long()  # (batch, ctx_tokens)
        past_id = (seen.cummax(-1).values.cumsum(-1) - 1).clamp(min=0)
        future_id = torch.arange(s.prediction_tokens, device=device) + past_id.max(-1, keepdim=True).values + 1
        time_id = torch.cat([past_id.repeat(1, t), future_id.repeat(1, t), past_id.repeat(1, k),
                             future_id.repeat(1, k), past_id.repeat(1, p)], dim=1)

        def variates(first: int, count: int, tokens: int) -> Tensor:
            return torch.arange(first, first + count, device=device).repeat_interleave(tokens)

        ct, pt = s.context_tokens, s.prediction_tokens
        variate_id = torch.cat([variates(0, t, ct), variates(0, t, pt), variates(t, k, ct), variates(t, k, pt),
                                variates(t + k, p, ct)])
        ones = lambda n: torch.ones(n, dtype=torch.bool, device=device)  # noqa: E731
        prediction_mask = torch.cat([~ones(t * ct), ones(t * pt), ~ones(k * (ct + pt) + p * ct)])
        # a context patch of padding only is no token of the sample (sample_id 0), as MoiraiForecast._convert has
        # it: the targets count the steps that align the context to whole patches as padding, the covariates not
        step = torch.arange(ct * s.patch_size, device=device)
        before = step < s.context_pad + self.pad
        target_sid, covariate_sid = ((~pad.reshape(ct, s.patch_size).all(-1)).long()
                                     for pad in (before, before & (step >= s.context_pad)))
        hor_sid = torch.ones(pt, dtype=torch.long, device=device)
        sample_id = torch.cat([target_sid.repeat(t), hor_sid.repeat(t), covariate_sid.repeat(k), hor_sid.repeat(k),
                               covariate_sid.repeat(p)])
        seq = len(variate_id)
        return {
            "sample_id": sample_id.expand(b, seq),
            "time_id": time_id,
            "variate_id": variate_id.expand(b, seq),
            "prediction_mask": prediction_mask.expand(b, seq),
            "patch_size": torch.full((b, seq), s.patch_size, dtype=torch.long, device=device),
        }
