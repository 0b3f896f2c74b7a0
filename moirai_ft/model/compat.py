"""The uni2ts and Lightning internals moirai-ft relies on, in one module, with the versions they were
written for. Everything here reaches past a library's public interface: private modules and attributes,
subclasses that replace a method, forward passes copied line for line. Other modules take these only
from here, so a new uni2ts or Lightning release means reading this file, not the package.

Importing this module checks the installed versions first (`check_versions`); outside the supported
ones it raises UnsupportedVersion, one line naming the installed version and what to install.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any, Mapping

from packaging.version import InvalidVersion, Version

from moirai_ft.errors import UserError

# exact: the scaler and the forward pass below are copies of uni2ts 2.0.0's
UNI2TS = "2.0.0"
# the Lightning internals below: the CSV ExperimentWriter (its metrics_keys, metrics_file_path, and the
# _check_log_dir_exists that 2.6 calls to delete metrics.csv; 2.2 has none and deletes nothing, so the
# override in train/loggers.py is a no-op there), rank_zero_experiment, TQDMProgressBar's bar attributes.
# Read in the 2.2.0 and 2.6.6 sources; the tests run on 2.6.6. pyproject.toml pins the same range.
LIGHTNING = ("2.2", "3")  # >= first, < second


class UnsupportedVersion(UserError):
    """An installed uni2ts or Lightning this module was not written for."""


def _release(version: str) -> tuple[int, ...]:
    """(2, 6, 6) from 2.6.6, 2.6.6.post1 or 2.6.6rc1; () for a version string packaging cannot read."""
    try:
        return Version(version).release
    except InvalidVersion:
        return ()


def installed_versions() -> dict[str, str | None]:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {"uni2ts": version("uni2ts"), "lightning": version("lightning")}


def check_versions(installed: Mapping[str, str | None] | None = None) -> None:
    """Raise UnsupportedVersion unless uni2ts and Lightning are versions this module was written for."""
    installed = installed_versions() if installed is None else installed
    uni2ts, lightning = installed.get("uni2ts"), installed.get("lightning")
    if uni2ts != UNI2TS:
        raise UnsupportedVersion(
            f"moirai-ft needs uni2ts {UNI2TS} (its internals are patched in moirai_ft/model/compat.py), "
            f"but uni2ts {uni2ts or 'is not installed'}{' is installed' if uni2ts else ''}: "
            f"pip install 'uni2ts=={UNI2TS}'"
        )
    low, high = LIGHTNING
    if lightning is None or not (Version(low).release <= _release(lightning) < Version(high).release):
        raise UnsupportedVersion(
            f"moirai-ft needs lightning >={low},<{high} (its internals are used in moirai_ft/model/compat.py), "
            f"but lightning {lightning or 'is not installed'}{' is installed' if lightning else ''}: "
            f"pip install 'lightning>={low},<{high}'"
        )


check_versions()  # before the imports below: another version may not even have these modules

# ruff: noqa: E402 - the internals are imported only once the versions are known to have them
import torch
from einops import reduce
from jaxtyping import Bool, Float, Int
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from torch import Tensor, nn
from uni2ts.common.torch_util import mask_fill, packed_attention_mask, safe_div
from uni2ts.distribution._base import DistrParamProj
from uni2ts.model.moirai import MoiraiModule
from uni2ts.module.packed_scaler import PackedStdScaler
from uni2ts.module.position import RotaryProjection

__all__ = [
    "ExperimentWriter", "rank_zero_experiment", "FAST_SUBCLASSES", "StaticRotaryProjection", "SyncFreeStdScaler",
    "Fp32DistrParamProj", "distribution_inputs", "forward_parts", "open_progress_bars", "check_versions",
    "UnsupportedVersion",
]

# ---------------------------------------------------------------------------------------------------
# uni2ts: subclasses the fast path swaps in (model/fast_path.py), same values with no host sync


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


# uni2ts class -> the subclass use_fast_path swaps in (exact classes only)
FAST_SUBCLASSES: dict[type[nn.Module], type[nn.Module]] = {
    RotaryProjection: StaticRotaryProjection,
    PackedStdScaler: SyncFreeStdScaler,
    DistrParamProj: Fp32DistrParamProj,
}


# ---------------------------------------------------------------------------------------------------
# uni2ts: MoiraiModule.forward, taken apart


def distribution_inputs(
    module: MoiraiModule, batch: Mapping[str, Tensor]
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


def forward_parts(module: MoiraiModule, **inputs: Tensor) -> tuple[Any, Tensor, Tensor]:
    """The distribution parameters and the scaler's loc and scale of uni2ts's own forward pass (run
    unchanged, read with hooks on its scaler and param_proj submodules)."""
    captured: dict[str, Any] = {}
    hooks = [
        module.scaler.register_forward_hook(lambda _m, _i, out: captured.__setitem__("loc_scale", out)),
        module.param_proj.register_forward_hook(lambda _m, _i, out: captured.__setitem__("params", out)),
    ]
    try:
        module(**inputs)
    finally:
        for h in hooks:
            h.remove()
    loc, scale = captured["loc_scale"]
    return captured["params"], loc, scale


# ---------------------------------------------------------------------------------------------------
# Lightning


def forecast_convert(forecast: Any, patch_size: int, **inputs: Tensor) -> tuple[Tensor, ...]:
    """Moirai2Forecast._convert / MoiraiMoEForecast._convert (private in uni2ts 2.0.0): context and horizon
    as the module's packed fields (target, observed_mask, sample_id, time_id, variate_id, prediction_mask).
    The decoder families train on exactly the layout their forecast class builds (model/families/decoder.py)."""
    return forecast._convert(patch_size, **inputs)


def open_progress_bars(bar: TQDMProgressBar) -> list[Any]:
    """The tqdm bars a TQDMProgressBar has created (its private attributes; None until used)."""
    return [b for b in (bar._train_progress_bar, bar._val_progress_bar, bar._test_progress_bar) if b is not None]
