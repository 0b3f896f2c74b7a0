"""Readable sweep job directory names: `model=small,pattern=full,lr=1e-05[,other swept overrides]`.

`dirname` is the pure rule; `job_dirname` is the `${moirai_job_dirname:}` resolver conf/train.yaml sets
as hydra.sweep.subdir, which reads the sweep's multirun.yaml to learn which keys the sweep varies (a
job's own config only has its concrete values). Importing this module registers the resolver; the job
runner imports it, so it is there wherever Hydra resolves a job's directory (a launcher's process too).
"""

from __future__ import annotations

import hashlib
import inspect
import os
from enum import Enum
from pathlib import Path
from typing import Any, Iterable

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from moirai_ft.config.root import RUN_KEYS

# keys that name the job first in its directory, then every other override but these
DIRNAME_HEAD = ("model", "pattern", "lr")
NOT_IN_DIRNAME = ("sweep",) + RUN_KEYS
MAX_DIRNAME = 240  # bytes; file systems allow 255 per name
RESOLVER = "moirai_job_dirname"


def format_value(value: Any) -> str:
    """1e-05 for a float (repr: exact, so two lrs never share a name), the enum's value, else str."""
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def override_key(override: str) -> str:
    """`+data.path=x` -> `data.path`."""
    return override.split("=", 1)[0].lstrip("+~")


def swept_keys(sweep_dir: Path) -> set[str] | None:
    """The keys a sweep varies: sweep syntax on its command line (lr=1e-5,2e-5, range(...)) and
    hydra.sweeper.params (the conf/sweep presets), read from the multirun.yaml the sweeper saved
    before launching. None when there is no such file (another sweeper plugin)."""
    try:
        master = OmegaConf.load(Path(sweep_dir) / "multirun.yaml")
        task = list(master.hydra.overrides.task)
        params = dict(master.hydra.sweeper.get("params") or {})
    except Exception:  # noqa: BLE001 - naming falls back to every override
        return None
    parsed = OverridesParser.create().parse_overrides(task)
    return {o.key_or_group for o in parsed if o.is_sweep_override()} | {override_key(k) for k in params}


def dirname(model: Any, pattern: Any, lr: Any, overrides: Iterable[str], varied: set[str] | None) -> str:
    """The head (model, pattern, lr), then the job's overrides of the `varied` keys (all when None), so
    that two jobs of one sweep never share a directory while the settings common to the whole sweep stay
    out of every name (they are in .hydra/overrides.yaml)."""
    head = [f"{key}={format_value(value)}" for key, value in (("model", model), ("pattern", pattern), ("lr", lr))]
    skip = set(DIRNAME_HEAD) | set(NOT_IN_DIRNAME)
    tail = [o for o in overrides if override_key(o) not in skip and (varied is None or override_key(o) in varied)]
    name = ",".join(head + tail).replace(os.sep, "_")  # a path value must not nest directories
    if len(name.encode()) > MAX_DIRNAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = name.encode()[: MAX_DIRNAME - 9].decode(errors="ignore") + "," + digest
    return name


def job_dirname(*, _root_: DictConfig) -> str:
    """hydra.sweep.subdir of a job: dirname() of its config and of the keys its sweep varies."""
    return dirname(_root_.model.name, _root_.pattern.name, _root_.lr, _root_.hydra.overrides.task,
                   swept_keys(Path(str(_root_.hydra.sweep.dir))))


# OmegaConf 2.4 gave register_new_resolver's semantics to register_resolver (and deprecated the former);
# in 2.3 register_resolver is the old string-only API, which knows no `_root_`. Tell them by `replace`.
# (hydra_plugins/moirai_slurm_launcher registers its resolver with it too)
register_resolver = (OmegaConf.register_resolver if "replace" in inspect.signature(OmegaConf.register_resolver).parameters
             else OmegaConf.register_new_resolver)
if not OmegaConf.has_resolver(RESOLVER):
    register_resolver(RESOLVER, job_dirname)
