"""The root config's schema: every top-level key of conf/train.yaml with its type.

conf/train.yaml lists `root_schema` first in its defaults, so a misspelt root key (`learning_rate=1e-5`) or a
value of the wrong type (`lr=abc`, `epochs=2.5`) fails when Hydra composes the config, before anything runs
(train.py turns that failure into one line: moirai_ft/config/precheck.py). Ranges and relations between keys
are checked by validate() in schema.py: a type here, a range there.

ADDING A ROOT KEY OR A CONFIG GROUP: add one field below, in the section it belongs to, with its type and the
default conf/train.yaml gives it (or MISSING when a group supplies it). A group (model, logger, callbacks,
prune, ...) is typed `Any` here: each of its option files lists `/schema/<group>@_here_` (or no schema) in
its own defaults, so the group brings its own typing and a new option with other fields still composes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, List, Optional, Union

from omegaconf import MISSING

# int (a number of steps) or float (a fraction of an epoch / of the run): the type tells which
Steps = Union[int, float]
# field metadata of a key that says how a run or a sweep runs, or where it reports, not what a job trains
# (RUN_KEYS below): a new such key is one field with metadata=HOW_IT_RUNS
HOW_IT_RUNS = {"how_it_runs": True}


class Calibrate(str, Enum):
    """calibrate=: how the job's forecast bands are corrected on the validation windows."""

    none = "none"
    conformal = "conformal"  # CQR per level and horizon step (moirai_ft/evaluation/calibration.py)


@dataclass
class EvalSchema:
    """The test evaluation at the end of every job (moirai_ft/evaluation/compare.py)."""

    num_samples: int = 100  # sampled paths per window; their median is the point forecast
    max_windows: Optional[int] = 4096  # cap on test windows, None = all
    batch_size: int = MISSING  # conf/train.yaml: ${batch_size}
    seed: int = MISSING  # conf/train.yaml: ${seed}
    plot_windows: int = 4  # panels in forecast.png


@dataclass
class LrFinderSchema:
    """The lr range test's ramp (moirai_ft/search/lr_find.py)."""

    min_lr: float = 1e-8
    max_lr: float = 1e-2
    num_steps: int = 100


@dataclass
class RootSchema:
    # --- config groups: typed by their own options' schemas (config/schema.py) ---
    model: Any = MISSING
    pattern: Any = MISSING
    scheduler: Any = MISSING
    hardware: Any = MISSING
    data: Any = MISSING
    prune: Any = MISSING  # conf/prune: none | asha | hyperband | median (moirai_ft/search/prune.py)
    callbacks: Any = MISSING  # conf/callbacks: named Lightning callbacks (moirai_ft/train/from_config.py)
    logger: Any = field(default=MISSING, metadata=HOW_IT_RUNS)  # conf/logger: csv | tensorboard | mlflow | wandb | many (moirai_ft/train/from_config.py)

    # --- optimisation ---
    lr: float = MISSING
    weight_decay: float = MISSING
    batch_size: int = MISSING  # the global batch, over all devices
    epochs: int = MISSING
    steps_per_epoch: Optional[int] = None
    warmup_steps: Steps = MISSING  # int >= 0: optimizer steps; float in (0, 1): a fraction of the run's steps
    gradient_clip: float = MISSING
    oom_min_batch_size: int = MISSING

    # --- validation and early stopping ---
    val_check_interval: Steps = MISSING  # float in (0, 1]: fraction of an epoch; int: every N steps
    val_max_windows: Optional[int] = MISSING
    patience: int = MISSING
    min_delta: float = MISSING
    smoothing: int = MISSING
    monitor: str = MISSING  # val_nll | val_crps | val_mae: a name in `monitors` (checked in validate)
    # conf/monitors: the registry `monitor` chooses from. The choice is in a job's fingerprint, the registry is
    # not (as the code of a family is not): a monitor added to it must not make every finished job a stranger
    monitors: Any = field(default=MISSING, metadata=HOW_IT_RUNS)
    monitor_samples: int = MISSING

    # --- lr range test ---
    lr_find: bool = False
    lr_finder: LrFinderSchema = field(default_factory=LrFinderSchema)

    # --- windows ---
    context_length: int = MISSING
    prediction_length: int = MISSING
    patch_size: int = MISSING

    # --- test evaluation ---
    eval: EvalSchema = field(default_factory=EvalSchema)
    seed: int = MISSING

    # --- forecasts to plan with (moirai_ft/evaluation/calibration.py, blend.py) ---
    calibrate: Calibrate = Calibrate.none
    blend: bool = False
    blend_grid: List[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])

    # --- sweeps ---
    resume: bool = field(default=True, metadata=HOW_IT_RUNS)
    sweep_root: str = field(default="multirun", metadata=HOW_IT_RUNS)

    # --- the user's budget (moirai_ft/budget): how a run or a sweep is run, not what a job trains ---
    plan: bool = field(default=False, metadata=HOW_IT_RUNS)  # print each job's windows, steps, checks and estimated wall time; train nothing
    budget: Optional[str] = field(default=None, metadata=HOW_IT_RUNS)  # a wall-clock duration (2h, 45min, 90s): start no job that cannot finish in it


# how a run or a sweep runs, not what a job trains: left out of a job's fingerprint (a rerun with another
# logger or budget finds its finished twin), its directory name, the sweep's study name, and analyze's
# grouping of seed repeats
RUN_KEYS: tuple[str, ...] = tuple(f.name for f in fields(RootSchema) if f.metadata.get("how_it_runs"))
