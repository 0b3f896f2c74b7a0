"""The schemas Hydra composes the configs against, registered with its ConfigStore by an explicit call:
train.py, predict.py, the test suite and anyone composing conf/ with Hydra's compose API call `register()`
before composing (importing a config module registers nothing).

conf/train.yaml lists `root_schema` first; each group option lists `/schema/<group>@_here_` (or no schema);
conf/predict.yaml lists `predict_schema`.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from moirai_ft.config.data import DataSchema
from moirai_ft.config.predict import PredictSchema
from moirai_ft.config.root import RootSchema
from moirai_ft.config.schema import (
    HardwareSchema, LoraPatternSchema, Moirai2ModelSchema, ModelSchema, MoEModelSchema, PatternSchema, PruneSchema,
    SchedulerSchema,
)

SCHEMAS = {  # name in the `schema` group -> its dataclass
    "model": ModelSchema,
    "model_moirai2": Moirai2ModelSchema,
    "model_moe": MoEModelSchema,
    "pattern": PatternSchema,
    "pattern_lora": LoraPatternSchema,
    "scheduler": SchedulerSchema,
    "hardware": HardwareSchema,
    "data": DataSchema,
    "prune": PruneSchema,
}


def register() -> None:
    """Store every schema (storing again replaces an entry with itself: calling twice is harmless)."""
    cs = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        cs.store(group="schema", name=name, node=node)
    cs.store(name="root_schema", node=RootSchema)  # conf/train.yaml's first default (moirai_ft/config/root.py)
    cs.store(name="predict_schema", node=PredictSchema)  # conf/predict.yaml's
