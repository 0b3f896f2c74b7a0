"""Check train.py's command line before Hydra runs it: compose the config as each job will see it (and, for a
single run, validate it), so a mistake is one `error:` line (exit 2) before any directory, data or model exists.
A `-m` sweep has each listed value composed (a wrong key or type would stop Hydra's sweeper halfway); a value
out of range fails only its own job, recorded in its metrics.json, while the other jobs run.

Hydra's own report of a composition error is several lines ending in a hint about HYDRA_FULL_ERROR, and
validate() inside the job comes after the job's directory and metrics.json exist. Torch-free on purpose:
a mistake costs a fraction of a second.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from moirai_ft.budget.duration import parse_duration
from moirai_ft.config.schema import validate
from moirai_ft.errors import UserError, first_line

# flags after which train.py does something other than compose this config and run it (print the config,
# help, another config): Hydra handles the command as given
_HANDS_OFF = ("--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc",
              "--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd", "--experimental-rerun",
              "--resolve", "--package", "-p")
_MULTIRUN = ("-m", "--multirun")
# settings of the whole run or sweep, not of one job (moirai_ft/budget): a sweep over them means nothing
SWEEP_WIDE = ("plan", "budget")

# groups whose options' `name` is the file's own (a pattern is what its file declares): `pattern.name=x` must
# name an option too
NAMED_BY_FILE = ("pattern",)

# OmegaConf's wording for a value of the wrong type -> what the key takes
_EXPECTED = (
    ("converted to Float", "a number"),
    ("converted to Integer", "a whole number"),
    ("Union[int, float]", "a number"),
    ("not a valid bool", "true or false"),
    ("is not a ListConfig", "a list, e.g. [0,0.5,1]"),
)


def check_command_line(
    args: list[str], conf_dir: Path, config_name: str = "train", check: Callable[[DictConfig], None] = validate
) -> str | None:
    """The one-line message for the first mistake in train.py's arguments (predict.py's: config_name and
    check), or None when every job they describe composes and passes `check`."""
    if any(a.split("=", 1)[0] in _HANDS_OFF for a in args):
        return None
    if message := unknown_choice(args, conf_dir):
        return message
    multirun = any(a in _MULTIRUN for a in args)
    overrides = [a for a in args if a not in _MULTIRUN]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:  # noqa: BLE001 - malformed override syntax
        return f"cannot read the command line: {first_line(e)}"
    sweeps = [raw for raw, o in zip(overrides, parsed) if o.is_sweep_override()]
    if sweeps and not multirun:
        return f"{sweeps[0]} is a sweep over several values: add -m to run one job per value, or give one value"
    for raw, o in zip(overrides, parsed):
        if o.is_sweep_override() and o.get_key_element().lstrip("+~") in SWEEP_WIDE:
            return f"{raw}: {o.get_key_element()} is one setting for the whole sweep; give one value"
    for job in job_overrides(overrides, parsed):
        try:
            with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
                cfg = compose(config_name=config_name, overrides=job)
            if not multirun:  # a sweep's job out of range is recorded as failed and the other jobs go on
                check(cfg)
            elif cfg.get("budget") is not None:  # the whole sweep's: refused before any job
                parse_duration(cfg.budget)
        except UserError as e:
            return str(e)
        except (HydraException, OmegaConfBaseException) as e:
            return composition_message(e, job)
    return None


def job_overrides(overrides: list[str], parsed: list[Override]) -> list[list[str]]:
    """The override lists to check: the command line as it is, or for a sweep (`lr=1e-5,abc`,
    `epochs=range(1,3)`) each value of each swept key once, the other swept keys at their first value.
    A key's type and range do not depend on the other keys' values, so this finds every bad value with
    one composition per value instead of one per job of the grid. Searched intervals are left out."""
    fixed: list[str] = []
    swept: list[tuple[str, list[str]]] = []
    for raw, o in zip(overrides, parsed):
        if not o.is_sweep_override():
            fixed.append(raw)
        elif o.is_choice_sweep() or o.is_range_sweep():
            try:
                swept.append((o.get_key_element(), list(o.sweep_string_iterator())))
            except Exception:  # noqa: BLE001 - values Hydra cannot list either: its sweeper reports them
                continue
    firsts = [f"{key}={values[0]}" for key, values in swept if values]
    jobs = [fixed + firsts]
    for i, (key, values) in enumerate(swept):
        for value in values[1:]:
            jobs.append(fixed + firsts[:i] + [f"{key}={value}"] + firsts[i + 1:])
    return jobs


def composition_message(e: Exception, overrides: list[str]) -> str:
    """One line naming the key and what it takes, from Hydra's and OmegaConf's composition errors."""
    cause = e.__cause__ if isinstance(e.__cause__, OmegaConfBaseException) else e
    key = getattr(cause, "full_key", None)
    detail = first_line(cause)
    if not key:
        return f"the config does not compose: {first_line(e)}" + (f" ({detail})" if cause is not e else "")
    given = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") == key]
    got = f" (got {given[-1].split('=', 1)[1]})" if given and "=" in given[-1] else ""
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and "not in" in detail:
        # the closest key of the same node, as omegaconf 2.4 suggests it (2.3, which hydra-core 1.3.3+ pins, does not)
        keys = [str(k) for k in cause.parent_node.keys()] if isinstance(cause.parent_node, DictConfig) else []
        hint = difflib.get_close_matches(str(cause.key), keys, n=1, cutoff=0.6)
        parent = key.rsplit(".", 1)[0] + "." if "." in key else ""
        fix = f"did you mean {parent}{hint[0]}?" if hint else "check its spelling (`--cfg job` lists the keys)"
        return f"unknown config key {key}; {fix}"
    for wording, expected in _EXPECTED:
        if wording in detail:
            return f"{key} must be {expected}{got}"
    if match := re.search(r"expected one of \[([^\]]*)\]", detail):
        return f"{key} must be one of: {match.group(1)}{got}"
    return f"{key}: {detail}"


def unknown_choice(args: list[str], conf_dir: Path) -> str | None:
    """A one-line message for a command-line choice of a config group option that does not exist
    (`pattern=freez_ffn`, or one item of a `-m` list), naming the options that do; None when all exist.
    Hydra's own message for this is a dozen lines ending in its search path."""
    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    except Exception:  # noqa: BLE001 - malformed overrides: Hydra reports those itself
        return None
    dirs = search_dirs(overrides, Path(conf_dir))
    if dirs is None:  # a search path this check cannot list (pkg://): Hydra reports a missing option itself
        return None
    for o in overrides:
        key = o.key_or_group
        group_name = key.removesuffix(".name") if key.removesuffix(".name") in NAMED_BY_FILE else key
        groups = [d / group_name for d in dirs if (d / group_name).is_dir()]
        # hydra/* groups also hold Hydra's and its plugins' own options: leave those to Hydra
        if key.startswith("hydra") or o.package is not None or not groups or o.is_delete():
            continue
        if o.is_sweep_override():
            if not o.is_choice_sweep():
                continue
            values = list(o.sweep_string_iterator())
        else:
            values = [o.value()]
        allowed = sorted({p.stem for group in groups for p in group.glob("*.yaml")})
        for v in values:
            if v is not None and str(v) not in allowed:
                if group_name != key:  # pattern.name=...
                    return f"{key} must be one of: {', '.join(allowed)} (got {v})"
                return f"unknown {key} {v!r}; choose one of: {', '.join(allowed)}"
    return None


def search_dirs(overrides: list[Override], conf_dir: Path) -> list[Path] | None:
    """conf/ and the directories a `hydra.searchpath=[...]` override adds (a pattern or a model option of
    one's own lives there); None when an entry is not a directory this check can list."""
    dirs = [conf_dir]
    for o in overrides:
        if o.key_or_group != "hydra.searchpath" or o.is_delete():
            continue
        value = o.value()
        for entry in value if isinstance(value, list) else [value]:
            entry = str(entry)
            if "://" in entry and not entry.startswith("file://"):
                return None
            dirs.append(Path(entry.removeprefix("file://")))
    return dirs
