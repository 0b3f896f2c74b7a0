"""conf/'s files read as written (not composed by Hydra): which model and pattern an experiment sets, which
experiments a preset runs, which conf/model options a model family has, a shipped pattern's node, the monitors'
registry. Torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from moirai_ft.config.schema import DEFAULT_FAMILY
from moirai_ft.errors import UserError

CONF = Path(__file__).resolve().parents[2] / "conf"


def experiment_values(name: str) -> dict[str, Any]:
    """model, pattern and values of conf/experiment/<name>.yaml (read as the file says, not composed)."""
    data = OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{name}.yaml"))
    assert isinstance(data, dict)
    out = {k: v for k, v in data.items() if k != "defaults"}
    for entry in data.get("defaults", []):
        if isinstance(entry, dict):
            for k, v in entry.items():
                out[k.replace("override", "").strip().lstrip("/")] = v
    return out


def stage_order(preset: str) -> list[str]:
    """The experiments a conf/sweep preset runs, in order."""
    data = OmegaConf.load(CONF / "sweep" / f"{preset}.yaml")
    return [e.strip() for e in str(data["hydra"]["sweeper"]["params"]["experiment"]).split(",")]


def model_options(family: str) -> list[str]:
    """The conf/model options of `family` (for messages): the files whose `family` key names it."""
    found = []
    for path in sorted((CONF / "model").glob("*.yaml")):
        data = OmegaConf.load(path)
        if str(data.get("family") or DEFAULT_FAMILY) == family:
            found.append(path.stem)
    return found


def pattern_option(name: str) -> DictConfig:
    """conf/pattern/<name>.yaml's node without its defaults list: a shipped pattern by name, for callers that
    compose no config (a job's pattern is its composed node, which may come from any config directory)."""
    path = CONF / "pattern" / f"{name}.yaml"
    if not path.is_file():
        allowed = sorted(p.stem for p in (CONF / "pattern").glob("*.yaml"))
        raise UserError(f"unknown pattern {name!r}; choose one of: {', '.join(allowed)}")
    node = OmegaConf.load(path)
    node.pop("defaults", None)
    return node


def shipped_monitors() -> dict[str, Any]:
    """conf/monitors/default.yaml's entries: the registry of a job whose config has none (written before
    monitors were config entries)."""
    data = OmegaConf.to_container(OmegaConf.load(CONF / "monitors" / "default.yaml"))
    assert isinstance(data, dict)
    return {k: v for k, v in data.items() if k != "defaults"}


def monitored_metric(monitor: Any, monitors: Any = None) -> str | None:
    """The test metric the monitor `monitor` is computed as (None: the validation loss itself, or a name the
    registry lacks). `monitors`: the job's registry, the shipped one for a job without."""
    entry = (monitors or shipped_monitors()).get(str(monitor)) or {}
    return entry.get("metric")
