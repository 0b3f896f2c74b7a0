"""Structured-config schemas for the small, typo-prone groups, and value checks run before any GPU time.

Each group's YAML options list `/schema/<group>@_here_` first in their defaults, so a misspelt key in a group
file or on the command line fails at compose time, and an enum field rejects a value not in its list
(OmegaConf's message names the allowed values). conf/data's schema is data.py's; store.py registers them all
with Hydra when an entry point asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from moirai_ft.budget.duration import parse_duration
from moirai_ft.errors import UserError
from moirai_ft.scores import METRIC_NAMES
from moirai_ft.values import plain


class ModelInit(str, Enum):
    pretrained = "pretrained"
    random = "random"


class SchedulerName(str, Enum):
    constant = "constant"
    cosine = "cosine"
    linear = "linear"


DEFAULT_FAMILY = "moirai1"  # the family of a conf/model without a `family` key (moirai_ft/model/families)


@dataclass
class ModelSchema:
    name: str = "small"
    checkpoint: Optional[str] = None  # hub id or local directory written by save_pretrained
    init: ModelInit = ModelInit.pretrained
    batch_size: int = 64
    d_model: int = 384
    num_layers: int = 6
    patch_sizes: tuple[int, ...] = (8, 16, 32, 64, 128)
    max_seq_len: int = 512
    max_dim: int = 128
    attn_dropout_p: float = 0.0
    dropout_p: float = 0.0
    patch_size: int = 32  # the family's default patch size (the root `patch_size` interpolates it)


@dataclass
class Moirai2ModelSchema(ModelSchema):
    """Moirai 2.0 (moirai_ft/model/families/moirai2.py): one patch size, quantiles for num_predict_token patches."""

    family: str = MISSING  # conf/model/<option>.yaml names it (moirai_ft/model/families/moirai2.py)
    d_ff: int = 1024
    num_predict_token: int = 4
    patch_sizes: tuple[int, ...] = (16,)
    patch_size: int = 16


@dataclass
class MoEModelSchema(ModelSchema):
    """Moirai-MoE (moirai_ft/model/families/moe.py): 32 experts per layer, decoder-only."""

    family: str = MISSING  # conf/model/<option>.yaml names it (moirai_ft/model/families/moe.py)
    d_ff: int = 512
    patch_sizes: tuple[int, ...] = (16,)  # the released moe_small / moe_base checkpoints' config.json
    patch_size: int = 16


@dataclass
class PatternSchema:
    """conf/pattern: which parameters a job trains, declared (moirai_ft/model/patterns.py; a new pattern is one
    file there). `train` and `freeze` name parts of the model's family (head, ffn) or globs on parameter names."""

    name: str = MISSING  # metrics.json `pattern`; the option's file name
    train: tuple[str, ...] = MISSING  # the parameters that train ("*": every one)
    freeze: tuple[str, ...] = ()  # of those, the ones that stay frozen
    adapter: Optional[str] = None  # a function (module, this node) -> module adding parameters first (lora)


@dataclass
class LoraPatternSchema(PatternSchema):
    """pattern=lora: peft LoRA adapters on the attention projections (and the feed-forward with ffn=true)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj")  # in each layer's self_attn
    ffn: bool = False  # also adapt the feed-forward layers (fc1, fc2, fc_gate; MoE experts included)


@dataclass
class SchedulerSchema:
    name: SchedulerName = SchedulerName.constant
    min_lr_ratio: float = 0.1


class CompileMode(str, Enum):
    """hardware.compile: how the training loss is compiled (moirai_ft/model/fast_path.py)."""

    off = "off"  # eager
    default = "default"  # inductor: fused kernels
    reduce_overhead = "reduce_overhead"  # inductor + CUDA graphs: one replay per forward and backward
    max_autotune = "max_autotune"  # inductor + CUDA graphs + autotuned matmuls (long compile)


@dataclass
class HardwareSchema:
    name: str = "auto"
    accelerator: str = "auto"
    devices: Any = 1
    precision: str = "32-true"
    strategy: str = "auto"
    compile: CompileMode = CompileMode.off
    # each refresh of the bar and each logged step reads the loss back from the GPU (a host sync)
    progress_bar_refresh: int = 1  # steps between progress-bar refreshes; 0 = no bar (and no progress lines)
    # output that is not a terminal (a file, a pipe) gets a plain progress line at most this often instead
    progress_log_s: float = 30.0
    log_every_n_steps: int = 50  # steps between logged training losses (capped at the epoch length)


@dataclass
class PruneSchema:
    """conf/prune: stop jobs of a sweep early on their monitored validation value (moirai_ft/search/prune.py).
    ADDING A PRUNER: one conf/prune/<name>.yaml whose `pruner` is an Optuna pruner as a `_target_` entry."""

    name: str = "none"  # the option's name: pruned_reason of the jobs it stops
    pruner: Any = None  # an optuna.pruners.BasePruner as a `_target_` entry with its arguments; null: none
    # where the study every job of the sweep shares lives: null = Optuna's journal file
    # <sweep_root>/optuna_journal.log (safe under concurrent processes); a path = a journal file there;
    # a URL (postgresql://, mysql://, sqlite:///) = Optuna's RDB storage
    storage: Optional[str] = None
    study_name: Optional[str] = None  # null: derived from the sweep's command line
    # a job whose monitored value is still above its zero-shot value after this many checks stops as
    # pruned (reason worse_than_zero_shot), whatever the pruner; null = off
    zero_shot_checks: Optional[int] = None
    # test windows for a pruned job: 0 = not tested (search/prune.py says why), null = eval.max_windows
    eval_max_windows: Optional[int] = 0
    # the settings of the pruners moirai-ft ships with, interpolated into their `pruner` entries
    min_resource: int = 1  # asha, hyperband: validation checks before the first rung
    reduction_factor: int = 3  # asha, hyperband
    max_resource: Any = "auto"  # hyperband: checks of a full job, or "auto"
    n_startup_trials: int = 2  # median: finished jobs before it prunes
    n_warmup_steps: int = 0  # median: checks before it prunes a job


def check_accelerator(cfg: DictConfig) -> None:
    """A CUDA accelerator asked for on a machine without one: one line before any data loads, not
    Lightning's runtime error after it."""
    accelerator = str(OmegaConf.select(cfg, "hardware.accelerator"))
    if accelerator not in ("gpu", "cuda"):
        return
    import torch  # here: keeps the schema module free of torch for analyze.py

    if not torch.cuda.is_available():
        raise UserError(
            f"hardware={OmegaConf.select(cfg, 'hardware.name')} needs a CUDA GPU and this machine has none; "
            "use hardware=auto (the GPU when there is one) or hardware=cpu (hardware.accelerator=cpu)"
        )


def validate(cfg: DictConfig) -> None:
    """Ranges and relations between keys, which a schema cannot express (the types are the schema
    dataclasses' and root.py's, enforced when Hydra composes). Raises UserError naming the key to change."""

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise UserError(msg)

    check_accelerator(cfg)
    if cfg.get("budget") is not None:
        parse_duration(cfg.budget)  # raises the one line naming budget=

    need(cfg.lr > 0, f"lr must be > 0 (got {cfg.lr}); e.g. lr=1e-5")
    need(cfg.weight_decay >= 0, f"weight_decay must be >= 0 (got {cfg.weight_decay})")
    need(cfg.batch_size >= 1, f"batch_size must be >= 1 (got {cfg.batch_size})")
    need(cfg.oom_min_batch_size >= 1, f"oom_min_batch_size must be >= 1 (got {cfg.oom_min_batch_size})")
    # epochs=0: no training, the zero-shot model validated and tested alone (a baseline job)
    need(cfg.epochs >= 0, f"epochs must be >= 0 (got {cfg.epochs}); 0 evaluates the zero-shot model alone")
    need(cfg.patience >= 1, f"patience must be >= 1 validation check (got {cfg.patience})")
    need(cfg.smoothing >= 1, f"smoothing must be >= 1 check (got {cfg.smoothing})")
    for key, low in (("zero_shot_checks", 1), ("eval_max_windows", 0)):
        v = cfg.prune[key]
        need(v is None or v >= low, f"prune.{key} must be >= {low} or null (got {v!r})")
    need(cfg.prune.min_resource >= 1 and cfg.prune.reduction_factor >= 2,
         f"prune.min_resource must be >= 1 and prune.reduction_factor >= 2 (got {cfg.prune.min_resource}, "
         f"{cfg.prune.reduction_factor})")
    lf = cfg.lr_finder
    need(0 < lf.min_lr < lf.max_lr, f"lr_finder.min_lr must be > 0 and below lr_finder.max_lr (got {lf.min_lr}, {lf.max_lr})")
    need(lf.num_steps >= 2, f"lr_finder.num_steps must be >= 2 (got {lf.num_steps})")
    monitors = cfg.monitors  # conf/monitors: the registry `monitor` names one entry of
    need(str(plain(cfg.monitor)) in monitors, f"monitor must be one of {', '.join(monitors)} (got {cfg.monitor!r})")
    metric = monitors[str(plain(cfg.monitor))].get("metric")
    need(metric is None or metric in METRIC_NAMES,
         f"monitors.{cfg.monitor}.metric must be one of {', '.join(METRIC_NAMES)} (got {metric!r})")
    need(cfg.monitor_samples >= 1, f"monitor_samples must be >= 1 (got {cfg.monitor_samples!r})")
    warmup = cfg.warmup_steps
    need(
        (isinstance(warmup, float) and 0 < warmup < 1) or (isinstance(warmup, int) and warmup >= 0),
        f"warmup_steps must be a number of steps >= 0 or a fraction of the run in (0, 1) (got {warmup})",
    )
    need(
        cfg.steps_per_epoch is None or cfg.steps_per_epoch >= 1,
        f"steps_per_epoch must be >= 1 or null (got {cfg.steps_per_epoch})",
    )
    for key in ("context_length", "prediction_length", "patch_size"):
        need(cfg[key] >= 1, f"{key} must be a positive number of time steps (got {cfg[key]})")
    need(cfg.patch_size in cfg.model.patch_sizes,  # the data's preflight checks the windows against the rest
         f"patch_size={cfg.patch_size} is not one of the model's patch sizes {list(cfg.model.patch_sizes)}; "
         "set patch_size to one of them")
    vci = cfg.val_check_interval
    need(
        (isinstance(vci, float) and 0 < vci <= 1) or (isinstance(vci, int) and vci >= 1),
        f"val_check_interval must be a fraction of an epoch in (0, 1] or a number of steps >= 1 (got {vci})",
    )
    need(
        cfg.val_max_windows is None or cfg.val_max_windows >= 1,
        f"val_max_windows must be >= 1 validation window or null for all (got {cfg.val_max_windows})",
    )
    need(cfg.gradient_clip > 0, f"gradient_clip must be > 0 (got {cfg.gradient_clip})")
    need(
        cfg.hardware.progress_bar_refresh >= 0,
        f"hardware.progress_bar_refresh must be >= 0 steps, 0 = no bar (got {cfg.hardware.progress_bar_refresh})",
    )
    need(
        cfg.hardware.progress_log_s > 0,
        f"hardware.progress_log_s must be > 0 seconds between progress lines (got {cfg.hardware.progress_log_s})",
    )
    need(
        cfg.hardware.log_every_n_steps >= 1,
        f"hardware.log_every_n_steps must be >= 1 (got {cfg.hardware.log_every_n_steps})",
    )
    need(
        0 <= cfg.scheduler.min_lr_ratio <= 1,
        f"scheduler.min_lr_ratio must be in [0, 1] (got {cfg.scheduler.min_lr_ratio})",
    )
    ratios = (cfg.data.train_ratio, cfg.data.val_ratio)
    need(
        all(0 < r < 1 for r in ratios) and sum(ratios) < 1,
        f"data.train_ratio and data.val_ratio must be in (0, 1) and leave room for a test split (got {ratios})",
    )
    need(cfg.data.window_stride >= 1, f"data.window_stride must be >= 1 (got {cfg.data.window_stride})")
    need(cfg.data.eval_stride >= 1, f"data.eval_stride must be >= 1 (got {cfg.data.eval_stride})")
    need(0 <= cfg.data.max_missing <= 1, f"data.max_missing is a fraction in [0, 1] (got {cfg.data.max_missing})")

    for key, minimum in (("num_samples", 1), ("max_windows", 1), ("batch_size", 1), ("plot_windows", 0), ("seed", 0)):
        v = cfg.eval[key]
        nullable = key == "max_windows"  # null: every test window
        need((nullable and v is None) or (v is not None and v >= minimum),
             f"eval.{key} must be >= {minimum}{' or null' if nullable else ''} (got {v!r})")
    grid = list(cfg.get("blend_grid") or [])
    need(all(0.0 <= w <= 1.0 for w in grid) and 0.0 in grid and 1.0 in grid,
         f"blend_grid must hold weights in [0, 1], among them 0 (zero-shot) and 1 (fine-tuned) (got {grid})")
