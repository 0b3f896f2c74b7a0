"""hydra/sweeper=optuna's settings (registered with Hydra's ConfigStore when Hydra scans hydra_plugins)."""


from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore

# `sampler=<name>` picks one of these Optuna samplers, each a `_target_` entry; the sweeper passes `seed` and,
# to a sampler that takes one (GridSampler), the search space. Another sampler is one more entry, here or on
# the command line: 'hydra.sweeper.samplers={qmc: {_target_: optuna.samplers.QMCSampler}}' hydra.sweeper.sampler=qmc
SAMPLERS: Dict[str, Any] = {
    "tpe": {"_target_": "optuna.samplers.TPESampler"},
    "random": {"_target_": "optuna.samplers.RandomSampler"},
    "grid": {"_target_": "optuna.samplers.GridSampler"},  # every combination of choice()/range()/list values
}


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.moirai_optuna_sweeper.sweeper.OptunaSweeper"
    _recursive_: bool = False  # the samplers' entries reach the sweeper as config: it builds the one chosen
    n_trials: int = 20  # trials the study holds when the sweep ends (a rerun continues up to this many)
    n_jobs: int = 1  # trials launched together through hydra/launcher (local, slurm, ...)
    sampler: str = "tpe"  # a name in samplers
    samplers: Dict[str, Any] = field(default_factory=lambda: dict(SAMPLERS))
    seed: Optional[int] = None  # the sampler's seed
    # the search space, as on the command line: lr: tag(log,interval(1e-7,1e-3)), pattern: choice(full,head_only)
    params: Optional[Dict[str, Any]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="moirai_ft")
