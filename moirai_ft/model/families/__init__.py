"""The model families, by the `family` key of conf/model (absent: Moirai 1.x). Every module of this package
is imported here, so each family in it registers itself (ModelFamily.__init_subclass__); a family outside
the package is imported the first time a config names its module (`family: my_pkg.my_family`)."""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path

from omegaconf import DictConfig
from torch import nn

from moirai_ft.config.schema import DEFAULT_FAMILY
from moirai_ft.errors import UserError, first_line
from moirai_ft.model.family import FAMILIES, ModelFamily

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def family_of(model_cfg: DictConfig) -> ModelFamily:
    name = str(model_cfg.get("family", None) or DEFAULT_FAMILY)
    if name not in FAMILIES and "." in name:  # a module outside the package: importing it registers its family
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            raise UserError(f"model.family={name}: cannot import it ({type(e).__name__}: {first_line(e)}); "
                            "name a registered family or an importable module defining one") from e
        found = [f for f in FAMILIES.values() if type(f).__module__ == module.__name__]
        if len(found) == 1:
            return found[0]
    if name not in FAMILIES:
        raise UserError(f"model.family={name} is not a model family; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of_module(module: nn.Module) -> ModelFamily:
    """The family whose module class `module` is (a LoRA-injected module keeps its class); of families
    whose classes derive from one another, the most derived."""
    matches = [f for f in FAMILIES.values() if isinstance(module, f.module_class)]
    if not matches:
        raise TypeError(f"{type(module).__name__} is not the module of a known model family")
    return max(matches, key=lambda f: len(f.module_class.__mro__))


def checkpoint_family(path: Path) -> ModelFamily | None:
    """The family whose save_pretrained wrote `path`/config.json, from the keys only it writes."""
    try:
        keys = set(json.loads((Path(path) / "config.json").read_text()))
    except (OSError, ValueError):
        return None
    # the most specific match: MoE's keys include Moirai 1.x's
    matches = [f for f in FAMILIES.values() if f.config_keys <= keys]
    return max(matches, key=lambda f: len(f.config_keys), default=None)
