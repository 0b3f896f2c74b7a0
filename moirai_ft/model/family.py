"""The model-family boundary: everything the job, the evaluation and the patterns need from a Moirai family.

A family (moirai_ft/model/families/*) says how to build or load its uni2ts module, how its training
windows are laid out, its training objective, its test forecast (equal to its uni2ts forecast class),
which parameters its patterns train, and its preflight limits. The rest of the package asks the family
(`family_of(cfg.model)` / `family_of_module(module)` in moirai_ft/model/families) and never the class.
"""

from __future__ import annotations

import inspect
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from jaxtyping import Float, Int
from omegaconf import DictConfig
from torch import Tensor, nn
from tqdm import tqdm

from moirai_ft.config.schema import CompileMode
from moirai_ft.console import is_terminal
from moirai_ft.data.windows import Batch, Windows, WindowSpec
from moirai_ft.errors import UserError
from moirai_ft.model.fast_path import distribution_validation, use_fast_path
from moirai_ft.scores import QUANTILE_LEVELS
from moirai_ft.values import plain

PROGRESS_MIN_BATCHES = 20  # show a forecast progress bar from this many batches on


def sample_quantiles(
    samples: Float[Tensor, "sample *rest"], levels: tuple[float, ...] = QUANTILE_LEVELS
) -> Float[Tensor, "level *rest"]:
    """Quantiles of sampled paths as gluonts's SampleForecast computes them (an order statistic)."""
    n = samples.shape[0]
    # np.round rounds half to even, as gluonts does; the index is plain Python, no host sync
    picks = [int(np.round((n - 1) * q)) for q in levels]
    ordered = samples.sort(dim=0).values
    return ordered[picks]


# name -> the family; each concrete ModelFamily subclass registers itself when its module is imported
# (moirai_ft/model/families/ imports every module of its package; a family elsewhere is named by its module)
FAMILIES: dict[str, ModelFamily] = {}


class ModelFamily(ABC):
    """One Moirai family. Stateless: one instance per family serves every job.

    ADDING A FAMILY: one module (a subclass setting `name` and the abstract methods; in
    moirai_ft/model/families/ or anywhere importable) and one conf/model/<option>.yaml with `family: <name>`
    (a family outside the package: `family: <its module's dotted path>`)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not inspect.isabstract(cls) and "name" in vars(cls):
            if cls.name in FAMILIES and type(FAMILIES[cls.name]) is not cls:
                raise TypeError(f"two model families named {cls.name!r}: {type(FAMILIES[cls.name]).__qualname__}, {cls.__qualname__}")
            FAMILIES[cls.name] = cls()

    name: ClassVar[str]  # metrics.json `family`
    title: ClassVar[str]  # for messages: "Moirai 2.0"
    # trains and forecasts with known/past covariates (data roles, moirai_ft/data/covariate_windows.py)
    supports_covariates: ClassVar[bool] = False
    module_class: ClassVar[type[nn.Module]]
    head: ClassVar[tuple[str, ...]]  # parameter-name prefixes of the output head (the part `head` of parts())
    config_keys: ClassVar[frozenset[str]]  # config.json keys that together mark this family's save_pretrained

    # --- module ------------------------------------------------------------------------------
    @abstractmethod
    def random_module(self, model_cfg: DictConfig) -> nn.Module:
        """A randomly initialised module of the configured size."""

    def from_pretrained(self, path: str | os.PathLike, **kwargs) -> nn.Module:
        return self.module_class.from_pretrained(str(path), **kwargs)

    def prepare_module(self, module: nn.Module) -> nn.Module:
        """The module as the fine-tuner trains it: uni2ts's classes swapped for sync-free ones (same values)."""
        return use_fast_path(module)

    # --- training ----------------------------------------------------------------------------
    def batch(self, windows: Windows, idx: Int[Tensor, "batch"]) -> Batch:
        """The module's inputs (and the loss's targets) for these windows."""
        return windows.batch(idx)

    @abstractmethod
    def loss(self, module: nn.Module, batch: Batch) -> Float[Tensor, ""]:
        """The family's training objective on a batch: a mean over the batch's series."""

    def train_loss(self, module: nn.Module, compile_mode: CompileMode | str) -> Callable[[Batch], Tensor]:
        """The loss as the training step computes it (Moirai 1.x can compile it)."""
        return lambda batch: self.loss(module, batch)

    def validation_loss(self, module: nn.Module, windows: Windows, batches: list[Int[Tensor, "batch"]]) -> float:
        """Mean loss over the windows, weighted by batch size (as the fine-tuner's validation)."""
        device = next(module.parameters()).device
        windows = windows.to(device)
        total = torch.zeros((), device=device, dtype=torch.float64)
        count = 0
        with torch.inference_mode(), distribution_validation(False):
            for idx in batches:
                total += self.loss(module, self.batch(windows, idx.to(device))).double() * len(idx)
                count += len(idx)
        return float(total / max(count, 1))

    # --- forecasting -------------------------------------------------------------------------
    # a family forecasts either by sampled paths (batch_paths: Moirai 1.x, MoE; the paths also give a mean)
    # or by quantiles directly (batch_quantiles: Moirai 2.0's quantile head, which has no mean)
    def batch_paths(self, module: nn.Module, windows: Windows, idx: Int[Tensor, "batch"], num_samples: int) -> Tensor | None:
        """(sample, batch, variate, pred) sampled paths for these windows, normalised scale, or None for a
        family that forecasts quantiles only; random draws come from torch's global generator."""
        return None

    def batch_quantiles(self, module: nn.Module, windows: Windows, idx: Int[Tensor, "batch"], num_samples: int) -> Tensor:
        """(batch, variate, level, pred) forecast quantiles (QUANTILE_LEVELS) for these windows,
        normalised scale; random draws come from torch's global generator (seeded by the caller)."""
        return self.batch_forecast(module, windows, idx, num_samples)[0]

    def batch_forecast(
        self, module: nn.Module, windows: Windows, idx: Int[Tensor, "batch"], num_samples: int
    ) -> tuple[Float[Tensor, "batch var level pred"], Float[Tensor, "batch var pred"] | None]:
        """(quantiles, mean of the sampled paths or None): the paths' quantiles as gluonts's SampleForecast
        computes them, or the family's own batch_quantiles."""
        paths = self.batch_paths(module, windows, idx, num_samples)
        if paths is None:
            if type(self).batch_quantiles is ModelFamily.batch_quantiles:
                raise NotImplementedError(f"{self.title} defines neither batch_paths nor batch_quantiles")
            return self.batch_quantiles(module, windows, idx, num_samples), None
        return sample_quantiles(paths).permute(1, 2, 0, 3), paths.mean(0)

    def forecast(
        self, module: nn.Module, windows: Windows, batches: list[Int[Tensor, "batch"]], num_samples: int,
        seed: int, desc: str,
    ) -> tuple[Float[np.ndarray, "item level pred"], Float[np.ndarray, "item pred"] | None]:
        """(quantiles, mean or None) per item (window, variate) for every batch, in the module's device. Both
        models of a job draw the same random numbers (the seed is set once, before the first batch)."""
        device = next(module.parameters()).device
        windows = windows.to(device)
        quantiles: list[Tensor] = []
        means: list[Tensor] = []
        cuda = [device] if device.type == "cuda" else []
        # argument checks on the model's own outputs cost host synchronisations and never fail
        with torch.random.fork_rng(devices=cuda), torch.inference_mode(), distribution_validation(False):
            torch.manual_seed(seed)
            # a bar only on a terminal: written to a file, each redraw is a carriage-return frame
            quiet = len(batches) < PROGRESS_MIN_BATCHES or not is_terminal()
            for idx in tqdm(batches, desc=desc, disable=quiet, leave=False):
                q, mean = self.batch_forecast(module, windows, idx.to(device), num_samples)
                quantiles.append(q.reshape(-1, len(QUANTILE_LEVELS), q.shape[-1]).float().cpu())
                if mean is not None:
                    means.append(mean.reshape(-1, mean.shape[-1]).float().cpu())
        return torch.cat(quantiles).numpy(), torch.cat(means).numpy() if means else None

    def forecast_quantiles(
        self, module: nn.Module, windows: Windows, batches: list[Int[Tensor, "batch"]], num_samples: int,
        seed: int, desc: str,
    ) -> Float[np.ndarray, "item level pred"]:
        """The quantiles of `forecast`."""
        return self.forecast(module, windows, batches, num_samples, seed, desc)[0]

    # --- patterns ----------------------------------------------------------------------------
    def parts(self) -> dict[str, tuple[str, ...]]:
        """The named groups of parameters a pattern's `train` and `freeze` may name (moirai_ft/model/patterns.py),
        as globs on parameter names: the output head, and the feed-forward blocks (MoE experts included:
        they live under `ffn`)."""
        return {"head": tuple(f"{h}.*" for h in self.head), "ffn": ("ffn.*", "*.ffn.*")}

    # --- preflight ---------------------------------------------------------------------------
    def preflight(self, spec: WindowSpec, num_variates: int, model_cfg: DictConfig) -> None:
        """Family limits beyond tokens vs max_seq_len and the patch size (data/preflight.check_model_fits)."""

    def check_loaded(self, module: nn.Module, model_cfg: DictConfig) -> None:
        """Loaded weights whose patch sizes or max_seq_len differ from conf/model's (which the preflight
        checked the windows against) are one line saying what to set."""
        sizes = list(getattr(module, "patch_sizes", None) or (module.patch_size,))
        if sizes != list(model_cfg.patch_sizes) or module.max_seq_len != model_cfg.max_seq_len:
            raise UserError(
                f"model.checkpoint={model_cfg.checkpoint} has patch sizes {sizes} and max_seq_len "
                f"{module.max_seq_len}, but model={model_cfg.name} says {list(model_cfg.patch_sizes)} and "
                f"{model_cfg.max_seq_len}; set model.patch_sizes=[{','.join(map(str, sizes))}] "
                f"model.max_seq_len={module.max_seq_len}"
            )

    def check_compile(self, compile_mode: CompileMode | str) -> None:
        if CompileMode(plain(compile_mode)) != CompileMode.off:
            raise UserError(f"hardware.compile is implemented for Moirai 1.x only; set hardware.compile=off for {self.title}")


def encoder_kwargs(model_cfg: DictConfig) -> dict[str, Any]:
    """The transformer's size and dropout, named as every uni2ts Moirai module takes them; scaling on, as in
    every released checkpoint. Each family adds its own head and patching arguments."""
    return dict(
        d_model=model_cfg.d_model,
        num_layers=model_cfg.num_layers,
        max_seq_len=model_cfg.max_seq_len,
        attn_dropout_p=model_cfg.attn_dropout_p,
        dropout_p=model_cfg.dropout_p,
        scaling=True,
    )
