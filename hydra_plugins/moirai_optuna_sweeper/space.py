"""The search space of hydra/sweeper=optuna: each sweep override of the command line as an Optuna
distribution, and the sampler chosen by name from the sweeper's `samplers` entries (config.py)."""

from __future__ import annotations

import inspect
import math
from typing import Any, Optional

import optuna
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.errors import HydraException
from hydra.utils import get_class, instantiate

from hydra_plugins.moirai_optuna_sweeper.config import SAMPLERS
from moirai_ft.values import plain


def distribution(override: Override) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution of one sweep override (sweeper.py's module doc)."""
    value = override.value()
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if "int" in value.tags:  # Hydra reads interval ends as floats: tag(int, ...) asks for integers
            return optuna.distributions.IntDistribution(int(value.start), int(value.end), log=log_scale)
        return optuna.distributions.FloatDistribution(float(value.start), float(value.end), log=log_scale)
    if isinstance(value, (ChoiceSweep, RangeSweep)):
        return optuna.distributions.CategoricalDistribution(list(override.sweep_iterator()))
    raise HydraException(f"hydra/sweeper=optuna cannot search {override.input_line}: use interval(), choice(), range() or a list")


def size(space: dict[str, optuna.distributions.BaseDistribution]) -> Optional[int]:
    """How many points the space holds when that is finite (only choice()/range()/lists), else None."""
    if not all(isinstance(d, optuna.distributions.CategoricalDistribution) for d in space.values()):
        return None
    return math.prod(len(d.choices) for d in space.values())


def evaluated(study: optuna.Study, space: dict[str, Any]) -> set[tuple]:
    """The points of the space with a finished trial (completed or pruned) in the study, whichever sweep ran it."""
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return {tuple(t.params[k] for k in sorted(space)) for t in study.get_trials(deepcopy=False, states=done)
            if all(k in t.params for k in space)}


def exhausted(study: optuna.Study, space: dict[str, Any]) -> bool:
    """Every point of a finite space has been evaluated: another trial could only repeat one (a skipped job)."""
    n = size(space)
    return n is not None and len(evaluated(study, space)) >= n


def make_sampler(name: str, seed: Optional[int], space: dict[str, Any],
                 samplers: Optional[dict[str, Any]] = None) -> optuna.samplers.BaseSampler:
    """The `_target_` entry `name` of `samplers` (config.SAMPLERS by default), given the seed and, when it
    takes one (GridSampler), the search space as lists of values."""
    samplers = dict(SAMPLERS if samplers is None else samplers)
    name = str(plain(name))
    if name not in samplers:
        raise HydraException(f"hydra.sweeper.sampler={name} is not a sampler; choose one of {', '.join(samplers)}")
    target = get_class(str(samplers[name]["_target_"]))
    kwargs: dict[str, Any] = {"seed": seed}
    if "search_space" in inspect.signature(target).parameters:
        not_discrete = [k for k, d in space.items() if not isinstance(d, optuna.distributions.CategoricalDistribution)]
        if not_discrete:
            raise HydraException(f"hydra.sweeper.sampler={name} needs choice()/range()/lists; {', '.join(not_discrete)} "
                                 "is an interval: list its values or use sampler=tpe")
        kwargs["search_space"] = {k: list(d.choices) for k, d in space.items()}
    return instantiate(samplers[name], **kwargs)
