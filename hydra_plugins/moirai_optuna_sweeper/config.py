"""hydra/sweeper=optuna's settings (registered with Hydra's ConfigStore when Hydra scans hydra_plugins)."""


from dataclasses import dataclass
from enum import Enum
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore


class SamplerName(str, Enum):
    tpe = "tpe"  # optuna.samplers.TPESampler
    random = "random"  # optuna.samplers.RandomSampler
    grid = "grid"  # optuna.samplers.GridSampler: every combination of choice()/range()/list values


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.moirai_optuna_sweeper.sweeper.OptunaSweeper"
    n_trials: int = 20  # trials the study holds when the sweep ends (a rerun continues up to this many)
    n_jobs: int = 1  # trials launched together through hydra/launcher (local, slurm, ...)
    sampler: SamplerName = SamplerName.tpe
    seed: Optional[int] = None  # the sampler's seed
    # the search space, as on the command line: lr: tag(log,interval(1e-7,1e-3)), pattern: choice(full,head_only)
    params: Optional[Dict[str, Any]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="moirai_ft")
