"""The registry of model families, by the `family` key of conf/model (absent: Moirai 1.x)."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig
from torch import nn

from moirai_ft.errors import UserError
from moirai_ft.model.family import ModelFamily
from moirai_ft.model.families.moirai1 import Moirai1
from moirai_ft.model.families.moirai2 import Moirai2
from moirai_ft.model.families.moe import MoiraiMoE

FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (Moirai1(), Moirai2(), MoiraiMoE())}



def family_of(model_cfg: DictConfig) -> ModelFamily:
    name = model_cfg.get("family", None) or Moirai1.name
    if name not in FAMILIES:
        raise UserError(f"model.family={name} is not a model family; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of_module(module: nn.Module) -> ModelFamily:
    """The family whose module class `module` is (a LoRA-injected module keeps its class)."""
    for family in FAMILIES.values():
        if isinstance(module, family.module_class):
            return family
    raise TypeError(f"{type(module).__name__} is not the module of a known model family")


def checkpoint_family(path: Path) -> ModelFamily | None:
    """The family whose save_pretrained wrote `path`/config.json, from the keys only it writes."""
    try:
        keys = set(json.loads((Path(path) / "config.json").read_text()))
    except (OSError, ValueError):
        return None
    # the most specific match: MoE's keys include Moirai 1.x's
    matches = [f for f in FAMILIES.values() if f.config_keys <= keys]
    return max(matches, key=lambda f: len(f.config_keys), default=None)
