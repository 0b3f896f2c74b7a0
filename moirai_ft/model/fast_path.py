"""The pieces that make a fine-tuning step fast without changing Moirai's mathematics.

A Moirai step does little arithmetic (about 6 x parameters x 19 tokens a sample), so on a GPU its time
goes to launching kernels and to the host waiting for the GPU. What is here removes those waits:

- uni2ts's rotary projection checks its cache length against `time_id.max()` on every attention call,
  and its std scaler zeroes padding with boolean-mask assignment (a `nonzero`); the two subclasses
  below compute the same values with no read-back, and `use_fast_path` swaps them in place (with a
  third that keeps the distribution head in fp32 under bf16 autocast);
- torch.distributions validates every argument and sample with `if not valid.all()`: off during the
  step, scoped (`distribution_validation`), since the model's outputs are valid by construction;
- AdamW's fused kernel updates all parameters at once and keeps its step counters on the device
  (`adamw_options`);
- optional torch.compile of the model's tensor part (`compile_forward`), for fused kernels and, in
  reduce-overhead mode, CUDA graphs (train batches all have one shape, so one graph serves the run);
- a progress bar that reads the loss back once per refresh, not every step (`SparseProgressBar`).

Each piece is checked against uni2ts's own result in tests/test_precision.py and tests/test_host_sync.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property, partial

import lightning as L
import torch
from einops import reduce
from jaxtyping import Bool, Float, Int
from lightning.pytorch.callbacks import TQDMProgressBar
from torch import Tensor, nn
from torch.distributions import Distribution
from uni2ts.common.torch_util import mask_fill, packed_attention_mask, safe_div
from uni2ts.distribution._base import DistrParamProj
from uni2ts.model.moirai import MoiraiModule
from uni2ts.module.packed_scaler import PackedStdScaler
from uni2ts.module.position import RotaryProjection

from moirai_ft.config.schema import CompileMode
from moirai_ft.data.windows import Batch

TRAIN_LOSS = "train/loss"  # the key the fine-tuner logs its step loss under


class StaticRotaryProjection(RotaryProjection):
    """RotaryProjection without the per-call `if self.cos.size(-2) < seq_id.max() + 1` regrowth check.

    The tables are built at init for the model's max_seq_len, and a job never sends a time id beyond it
    (preflight.check_model_fits refuses samples longer than max_seq_len), so the check never fires; it only
    costs a host synchronisation per attention call.
    """

    def forward(
        self,
        x: Float[Tensor, "*batch group hpg seq dim"],
        seq_id: Int[Tensor, "*batch #group #hpg seq"],
    ) -> Float[Tensor, "*batch group hpg seq dim"]:
        return self.cos[seq_id] * x + self.sin[seq_id] * self._rotate(x)


class SyncFreeStdScaler(PackedStdScaler):
    """PackedStdScaler with padding (sample_id 0) set to loc 0, scale 1 by `torch.where` instead of
    boolean-mask assignment, which needs `nonzero` (a host synchronisation) on a GPU. Same values."""

    def _get_loc_scale(
        self,
        target: Float[Tensor, "*batch seq_len #dim"],
        observed_mask: Bool[Tensor, "*batch seq_len #dim"],
        sample_id: Int[Tensor, "*batch seq_len"],
        variate_id: Int[Tensor, "*batch seq_len"],
    ) -> tuple[Float[Tensor, "*batch seq_len #dim"], Float[Tensor, "*batch seq_len #dim"]]:
        # uni2ts 2.0.0's PackedStdScaler._get_loc_scale, line for line, up to its last two assignments
        id_mask = torch.logical_and(
            torch.eq(sample_id.unsqueeze(-1), sample_id.unsqueeze(-2)),
            torch.eq(variate_id.unsqueeze(-1), variate_id.unsqueeze(-2)),
        )
        tobs = reduce(
            id_mask * reduce(observed_mask, "... seq dim -> ... 1 seq", "sum"),
            "... seq1 seq2 -> ... seq1 1",
            "sum",
        )
        loc = reduce(
            id_mask * reduce(target * observed_mask, "... seq dim -> ... 1 seq", "sum"),
            "... seq1 seq2 -> ... seq1 1",
            "sum",
        )
        loc = safe_div(loc, tobs)
        var = reduce(
            id_mask * reduce(((target - loc) ** 2) * observed_mask, "... seq dim -> ... 1 seq", "sum"),
            "... seq1 seq2 -> ... seq1 1",
            "sum",
        )
        var = safe_div(var, (tobs - self.correction))
        scale = torch.sqrt(var + self.minimum_scale)
        padding = (sample_id == 0).unsqueeze(-1)
        loc = torch.where(padding, torch.zeros_like(loc), loc)
        scale = torch.where(padding, torch.ones_like(scale), scale)
        return loc, scale


class Fp32DistrParamProj(DistrParamProj):
    """The distribution head outside autocast. Under bf16-mixed the transformer's matrix products run
    in bf16, but the mixture's parameters, and so its log-density and the NLL, keep fp32 precision
    (in bf16 they carry about 3 significant digits). Without autocast this is DistrParamProj exactly."""

    def forward(
        self, reprs: Float[Tensor, "*batch seq d_model"], patch_size: Int[Tensor, "*batch seq"]
    ) -> dict[str, Tensor]:
        with torch.autocast(device_type=reprs.device.type, enabled=False):
            return super().forward(reprs.float(), patch_size)


_FAST: dict[type[nn.Module], type[nn.Module]] = {
    RotaryProjection: StaticRotaryProjection,
    PackedStdScaler: SyncFreeStdScaler,
    DistrParamProj: Fp32DistrParamProj,
}


def use_fast_path(module: nn.Module) -> nn.Module:
    """Swap, in place, uni2ts submodules for the subclasses above: no host synchronisation, and the
    distribution head in fp32 under autocast. Same values in fp32.

    Only the class changes: parameters, buffers, state_dict and save_pretrained output stay as they are.
    Exact classes only, so a subclass with its own behaviour is left alone.
    """
    for sub in module.modules():
        replacement = _FAST.get(type(sub))
        if replacement is not None:
            sub.__class__ = replacement
    return module


@contextmanager
def distribution_validation(enabled: bool) -> Iterator[None]:
    """torch.distributions' default argument validation, set for the block and restored after."""
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(enabled)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(previous)


def _torch_at_least(major: int, minor: int) -> bool:
    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    return version >= (major, minor)


def adamw_options(device: torch.device) -> dict[str, bool]:
    """AdamW's fused kernel where torch has one for the device (CUDA; CPU since torch 2.4), else foreach.

    Fused: one launch updates every parameter and the step counters live on the device; the default
    per-parameter path reads each counter with `.item()`.
    """
    if device.type == "cuda" or (device.type == "cpu" and _torch_at_least(2, 4)):
        return {"fused": True}
    return {"foreach": True}


_TORCH_MODE = {
    CompileMode.default: "default",
    CompileMode.reduce_overhead: "reduce-overhead",
    CompileMode.max_autotune: "max-autotune",
}


def distribution_inputs(
    module: MoiraiModule, batch: Batch
) -> tuple[dict[str, Tensor], Float[Tensor, "batch seq 1"], Float[Tensor, "batch seq 1"]]:
    """MoiraiModule.forward of uni2ts 2.0.0, line for line, up to the distribution it returns: its
    parameters, loc and scale. Tensors in and out, so torch.compile captures it whole (the Distribution
    objects that follow break a graph)."""
    target, observed_mask, prediction_mask = batch["target"], batch["observed_mask"], batch["prediction_mask"]
    sample_id, variate_id, patch_size = batch["sample_id"], batch["variate_id"], batch["patch_size"]
    loc, scale = module.scaler(target, observed_mask * ~prediction_mask.unsqueeze(-1), sample_id, variate_id)
    scaled_target = (target - loc) / scale
    reprs = module.in_proj(scaled_target, patch_size)
    masked_reprs = mask_fill(reprs, prediction_mask, module.mask_encoding.weight)
    reprs = module.encoder(
        masked_reprs, packed_attention_mask(sample_id), time_id=batch["time_id"], var_id=variate_id
    )
    return module.param_proj(reprs, patch_size), loc, scale


def _fill_cached_properties(module: nn.Module) -> None:
    """Compute every functools.cached_property of the submodules now: the first access writes to the
    instance, which breaks a graph (uni2ts's QueryKeyProjection.split_sizes is one)."""
    for sub in module.modules():
        for klass in type(sub).__mro__:
            for name, attr in vars(klass).items():
                if isinstance(attr, cached_property):
                    getattr(sub, name)


def compile_forward(
    module: MoiraiModule, mode: CompileMode | str, backend: str = "inductor"
) -> Callable[[Batch], Distribution] | None:
    """The module's forward with its tensor part compiled as one graph (None when mode is off).

    Static shapes: train batches all have one shape, so one graph, and with CUDA graphs one recording,
    serves the whole run. fullgraph: a graph break (a host sync crept in) is an error, not a slow step.
    The distribution and the loss stay eager. `backend="aot_eager"` (tests) captures without kernels.
    """
    mode = CompileMode(getattr(mode, "value", mode))
    if mode == CompileMode.off:
        return None
    _fill_cached_properties(module)
    how = {"mode": _TORCH_MODE[mode]} if backend == "inductor" else {"backend": backend}
    compiled = torch.compile(partial(distribution_inputs, module), fullgraph=True, dynamic=False, **how)
    graphs = backend == "inductor" and mode != CompileMode.default

    def forward(batch: Batch) -> Distribution:
        if graphs:
            # a new training iteration: the last step's outputs are done with, replay over them
            torch.compiler.cudagraph_mark_step_begin()
        params, loc, scale = compiled(batch)
        return module.distr_output.distribution(params, loc=loc, scale=scale)

    return forward


class SparseProgressBar(TQDMProgressBar):
    """A progress bar that reads the training loss from the device only when it redraws.

    Lightning converts every `prog_bar=True` metric to a Python number at the end of every batch, a host
    synchronisation per step whatever the refresh rate; the training loss is therefore logged without
    prog_bar, and this bar fetches it itself, once per refresh.
    """

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, int | str | float | dict[str, float]]:
        metrics = super().get_metrics(trainer, pl_module)
        loss = trainer.callback_metrics.get(TRAIN_LOSS)
        if isinstance(loss, Tensor):
            metrics[TRAIN_LOSS] = float(loss)
        return metrics

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # an interrupted fit (out of memory, then a retry at half the micro-batch) leaves its bars open, and
        # tqdm draws them again at exit, after everything else, like a job still running: clear them now
        for bar in (self._train_progress_bar, self._val_progress_bar, self._test_progress_bar):
            if bar is not None and not bar.disable:
                bar.leave = False
                bar.close()
