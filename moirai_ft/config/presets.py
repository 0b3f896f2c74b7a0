"""conf/'s files read as written (not composed by Hydra): which model and pattern an experiment sets, which
experiments a preset runs, which conf/model options a model family has. Torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from moirai_ft.config.schema import DEFAULT_FAMILY

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
