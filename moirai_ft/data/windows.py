"""Training/evaluation windows as batched tensors, built in one vectorised step.

A window is identified by (series, forecast start f): its context is [f - context_length, f) and its
horizon [f, f + prediction_length). `Windows.batch` turns a vector of window ids into exactly the fields
MoiraiModule consumes, laid out as uni2ts's fine-tuning transforms lay them out (EvalPad with NaN,
observed mask, zero imputation, Patchify to the largest patch size, variate-major flattening in mode M).
The series live on the training device, so a batch costs a gather, not a DataLoader round trip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from moirai_ft.values import plain

Batch = dict[str, Tensor]


@dataclass(frozen=True)
class WindowSpec:
    context_length: int
    prediction_length: int
    patch_size: int
    max_patch_size: int = 128

    @property
    def context_pad(self) -> int:  # NaN steps before the context so it fills whole patches
        return -self.context_length % self.patch_size

    @property
    def prediction_pad(self) -> int:  # NaN steps after the horizon
        return -self.prediction_length % self.patch_size

    @property
    def context_tokens(self) -> int:
        return math.ceil(self.context_length / self.patch_size)

    @property
    def prediction_tokens(self) -> int:
        return math.ceil(self.prediction_length / self.patch_size)

    @property
    def tokens(self) -> int:  # per variate
        return self.context_tokens + self.prediction_tokens


class Windows:
    """All windows of one split. Mode S: one sample per (column, start); mode M: one sample per start
    holding every column."""

    def __init__(
        self,
        series: Float[Tensor, "var time"],
        starts: Int[Tensor, "n_starts"],
        spec: WindowSpec,
        mode: str = "S",
    ):
        self.series = series
        self.starts = starts
        self.spec = spec
        self.mode = str(plain(mode))  # the config's Mode enum member, or its value
        if self.mode not in ("S", "M"):
            raise ValueError(f"mode must be 'S' or 'M', got {mode!r}")
        self._offsets = torch.arange(-spec.context_length, spec.prediction_length, device=series.device)

    def __len__(self) -> int:
        n = len(self.starts)
        return n * self.series.shape[0] if self.mode == "S" else n

    @property
    def num_variates(self) -> int:
        return 1 if self.mode == "S" else self.series.shape[0]

    @property
    def forecast_columns(self) -> Int[Tensor, "var"]:
        """The series rows forecast (and scored): every one."""
        return torch.arange(self.series.shape[0], device=self.series.device)

    @property
    def has_covariates(self) -> bool:
        return False

    def horizon_positions(self, device: torch.device) -> Int[Tensor, "horizon_tokens"]:
        """Sequence positions of the prediction tokens, variate-major as `batch` lays them out."""
        s = self.spec
        per_variate = torch.arange(s.context_tokens, s.tokens, device=device)
        return (torch.arange(self.num_variates, device=device)[:, None] * s.tokens + per_variate).reshape(-1)

    def to(self, device: torch.device | str) -> "Windows":
        return Windows(self.series.to(device), self.starts.to(device), self.spec, self.mode)

    def locate(self, idx: Int[Tensor, "batch"]) -> tuple[Int[Tensor, "batch"], Int[Tensor, "batch"]]:
        """(series index, forecast start) of each window id; in mode M the series index is 0."""
        n = len(self.starts)
        if self.mode == "S":
            return idx // n, self.starts[idx % n]
        return torch.zeros_like(idx), self.starts[idx]

    def raw(self, idx: Int[Tensor, "batch"]) -> Float[Tensor, "batch var ctx_plus_pred"]:
        """The unpadded values of each window (NaN where missing)."""
        col, start = self.locate(idx)
        steps = start[:, None] + self._offsets  # (batch, ctx+pred)
        if self.mode == "S":
            return self.series[col[:, None], steps].unsqueeze(1)
        return self.series[:, steps].permute(1, 0, 2)

    def batch(self, idx: Int[Tensor, "batch"]) -> Batch:
        s = self.spec
        x = self.raw(idx.to(self.series.device))
        b, v, _ = x.shape
        x = torch.nn.functional.pad(x, (s.context_pad, s.prediction_pad), value=float("nan"))
        observed = ~torch.isnan(x)
        x = torch.where(observed, x, 0.0)
        # (batch, var, tokens, patch) -> pad the patch axis to max_patch -> (batch, var*tokens, max_patch)
        x = x.reshape(b, v, s.tokens, s.patch_size)
        observed = observed.reshape(b, v, s.tokens, s.patch_size)
        extra = s.max_patch_size - s.patch_size
        target: Float[Tensor, "batch seq max_patch"] = torch.nn.functional.pad(x, (0, extra)).reshape(
            b, v * s.tokens, s.max_patch_size
        )
        observed_mask: Bool[Tensor, "batch seq max_patch"] = torch.nn.functional.pad(
            observed, (0, extra), value=False
        ).reshape(b, v * s.tokens, s.max_patch_size)
        return {"target": target, "observed_mask": observed_mask, **self._ids(b, v, x.device)}

    def _ids(self, b: int, v: int, device: torch.device) -> Batch:
        s = self.spec
        time_id = torch.arange(s.tokens, device=device).repeat(v)
        variate_id = torch.arange(v, device=device).repeat_interleave(s.tokens)
        prediction_mask = (torch.arange(s.tokens, device=device) >= s.context_tokens).repeat(v)
        seq = v * s.tokens
        return {
            "sample_id": torch.ones(b, seq, dtype=torch.long, device=device),
            "time_id": time_id.expand(b, seq),
            "variate_id": variate_id.expand(b, seq),
            "prediction_mask": prediction_mask.expand(b, seq),
            "patch_size": torch.full((b, seq), s.patch_size, dtype=torch.long, device=device),
        }


def forecast_starts(first: int, last: int, stride: int, device: torch.device | str = "cpu") -> Int[Tensor, "n"]:
    """Forecast starts first, first+stride, ... <= last (empty when last < first)."""
    if last < first:
        return torch.empty(0, dtype=torch.long, device=device)
    return torch.arange(first, last + 1, stride, dtype=torch.long, device=device)


class IndexBatches(torch.utils.data.Sampler):
    """The training order: `batch(epoch, step)` is the window ids of that step, reshuffled every epoch
    from (seed, epoch). A pure function of (epoch, step), so a run resumed from a mid-epoch checkpoint
    takes exactly the batches a clean run takes (Lightning restores the epoch and step; it cannot restore
    a plain iterator's position). As a DataLoader's sampler it only paces Lightning's epoch: it yields
    the step numbers, and the LightningModule asks for the ids of the step it is at.

    With steps_per_epoch the epoch is that many batches, continuing through fresh permutations. Under
    DDP every rank draws the same permutation and takes every world_size-th window of it, in batches of
    `batch_size` (the per-rank batch): step i of all ranks together is step i of one device with the
    global batch. Consecutive micro-batches of a smaller batch_size (gradient accumulation) together
    are the same windows as one batch of the larger size.
    """

    def __init__(
        self,
        num_windows: int,
        batch_size: int,
        shuffle: bool,
        seed: int,
        steps_per_epoch: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.num_windows = num_windows
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        # equal shares: a rank with one batch fewer would leave the others waiting in the gradient all-reduce
        self.per_rank = num_windows // world_size
        self.batches_per_pass = self.per_rank // batch_size  # the uneven tail of a permutation is left out
        # fewer windows than one batch yield nothing, whatever steps_per_epoch asks: len() says so (run_job stops)
        full = self.batches_per_pass
        self.steps = full if steps_per_epoch is None or full == 0 else steps_per_epoch
        self._cached: tuple[tuple, Tensor] | None = None

    def __len__(self) -> int:
        return self.steps

    def _order(self, epoch: int, k: int, device: torch.device | str) -> Tensor:
        """This rank's share of pass k of the epoch's window order, on `device` (one copy per pass)."""
        key = (epoch, k, str(device))
        if self._cached is None or self._cached[0] != key:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 7919 + k)
                order = torch.randperm(self.num_windows, generator=g)
            else:
                order = torch.arange(self.num_windows)
            share = order[: self.per_rank * self.world_size][self.rank :: self.world_size]
            self._cached = (key, share.to(device))
        return self._cached[1]

    def batch(self, epoch: int, step: int, device: torch.device | str = "cpu") -> Int[Tensor, "batch"]:
        k, j = divmod(step, self.batches_per_pass)
        return self._order(epoch, k, device)[j * self.batch_size : (j + 1) * self.batch_size]

    def __iter__(self):
        return iter(torch.arange(self.steps))


class _Identity(torch.utils.data.Dataset):
    def __getitem__(self, idx: Tensor) -> Tensor:
        return idx

    def __len__(self) -> int:  # unused: the sampler decides the epoch
        return 0


def index_loader(sampler: "IndexBatches | list[Tensor]") -> torch.utils.data.DataLoader:
    """A DataLoader whose every item is one batch of window ids, as produced by `sampler`."""
    return torch.utils.data.DataLoader(_Identity(), sampler=sampler, batch_size=None, num_workers=0)


def eval_batches(num_windows: int, batch_size: int, max_windows: int | None = None) -> list[Tensor]:
    """Fixed window-id batches for validation/test: all windows, or `max_windows` evenly spaced."""
    if max_windows is not None and num_windows > max_windows:
        ids = torch.linspace(0, num_windows - 1, max_windows).round().long().unique()
    else:
        ids = torch.arange(num_windows)
    return list(torch.split(ids, batch_size))
