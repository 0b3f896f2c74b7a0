"""The job directories below a path and what each holds: its state, metrics, resolved config and
overrides, validation losses and the section 7 diagnosis.

Reading never raises on a job directory: a running job, a failed or diverged one, a metrics.json cut
short or a missing history each become a job with its state and a note.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from moirai_ft import weights
from moirai_ft.analysis.diagnose import Finding, apply_overrides, diagnose, judged_metric
from moirai_ft.budget.duration import format_duration
from moirai_ft.artifacts import CHECKPOINTS, HISTORY, LOGS, METRICS, read_json
from moirai_ft.result import NESTED_FIELDS
from moirai_ft.sweep.state import FINGERPRINT, LINK, is_running, read_link

JOB_MARKERS = (METRICS, FINGERPRINT, HISTORY, LINK)
NESTED = (CHECKPOINTS, LOGS, ".hydra", "plots")  # inside a job directory: never job directories


class State(str, Enum):
    completed = "completed"
    pruned = "pruned"  # stopped early by the sweep's pruner or the zero-shot rule; its best weights are its result
    diverged = "diverged"
    running = "running"  # a process holds the job's lock now
    unfinished = "unfinished"  # no metrics.json and nobody running it: killed, or not started yet
    not_started = "not started: budget"  # budget=: left out before it trained (moirai_ft/budget/clock.py), no result
    failed = "failed"
    unreadable = "unreadable"  # metrics.json exists but is not a JSON object (cut short, edited)
    damaged = "damaged"  # finished, but checkpoints/best no longer matches its recorded checksum
    lr_find = "lr_find"  # an lr range test (lr_find=true): a suggestion, no trained model


STATE_ORDER = list(State)  # table order after the metric: results first, then what needs attention
# name -> value dicts, flattened as test.mase (moirai_ft/result.py); test_without_covariates only in jobs with
# covariates (data roles)
NESTED_METRICS = NESTED_FIELDS


@dataclass
class Job:
    path: Path
    state: State
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # resolved, when it could be read
    overrides: list[str] = field(default_factory=list)  # the job's command-line overrides
    losses: list[float] = field(default_factory=list)  # validation loss per check, zero-shot first
    history: pd.DataFrame | None = None
    note: str = ""
    findings: list[Finding] = field(default_factory=list)

    def value(self, key: str) -> Any:
        """A metrics field, `test.mase` style for the nested ones; else the job's config."""
        if "." in key and key.split(".", 1)[0] in NESTED_METRICS:
            group, name = key.split(".", 1)
            nested = self.metrics.get(group)
            return nested.get(name) if isinstance(nested, dict) else None
        if key in self.metrics:
            return self.metrics[key]
        # family: jobs from before the families existed ran Moirai 1.x
        family = _get(self.config, "model.family") or ("moirai1" if self.config else None)
        return {"model": _get(self.config, "model.name"), "family": family, "pattern": _get(self.config, "pattern.name"),
                "lr": self.config.get("lr"), "scheduler": _get(self.config, "scheduler.name")}.get(key)

    def command(self, changes: dict[str, str] | None = None) -> str:
        """train.py with the job's overrides and `changes`; `-m` when a change lists values (seed=0,1,2)."""
        sweep = any("," in v and not v.startswith(("[", "{")) for v in (changes or {}).values())
        overrides = [o for o in apply_overrides(self.overrides, changes or {}) if not (sweep and o == "-m")]
        return "python train.py " + ("-m " if sweep else "") + " ".join(shlex.quote(o) for o in overrides)

    def reevaluate_command(self, changes: dict[str, str]) -> str:
        """Re-scoring this job's selected weights without training (moirai_ft/evaluation/reevaluate.py)."""
        return " ".join(["python -m moirai_ft.evaluate", shlex.quote(str(self.path)),
                         *(shlex.quote(f"{k}={v}") for k, v in changes.items())])

    def next_commands(self, finding: Finding) -> list[str]:
        """What a finding suggests running next, cheapest first."""
        first = [self.reevaluate_command(finding.reevaluate)] if finding.reevaluate else []
        return first + [self.command(alt) for alt in finding.alternatives]


def _get(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict):
            return None
        tree = tree.get(part)
    return tree


def find_job_dirs(root: Path) -> list[Path]:
    """Job directories at or below root, skipped/continued jobs replaced by the directory holding their
    result (each result once, even when several sweeps point at it)."""
    found: dict[Path, None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if any(m in filenames for m in JOB_MARKERS) or ".hydra" in dirnames:
            target = read_link(here) if LINK in filenames and METRICS not in filenames else None
            found[(target if target is not None and target.is_dir() else here).resolve()] = None
            dirnames.clear()
        else:
            dirnames[:] = [d for d in dirnames if d not in NESTED]
    return list(found)


def _read_config(job_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """The resolved config (fingerprint.json's, else .hydra/config.yaml's) and the overrides."""
    fingerprint = read_json(job_dir / FINGERPRINT)
    config = fingerprint.get("config") if isinstance(fingerprint, dict) else None
    if config is None:
        try:
            loaded = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
            config = OmegaConf.to_container(loaded, resolve=True, throw_on_missing=False)  # type: ignore[assignment]
        except Exception:  # noqa: BLE001 - an unreadable config only costs the diagnosis its inputs
            config = {}
    try:
        overrides = [str(o) for o in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")]
    except Exception:  # noqa: BLE001 - without them the next commands start from the bare defaults
        overrides = []
    return config if isinstance(config, dict) else {}, overrides


def _read_history(job_dir: Path) -> tuple[pd.DataFrame | None, str]:
    try:
        history = pd.read_csv(job_dir / HISTORY)
    except FileNotFoundError:
        return None, ""
    except Exception as e:  # noqa: BLE001 - a history cut short is reported, not fatal
        return None, f"{HISTORY} unreadable ({type(e).__name__})"
    if not {"epoch", "step", "val_loss"} <= set(history.columns):
        return None, f"{HISTORY} lacks epoch/step/val_loss columns"
    for col in ("epoch", "step", "val_loss"):
        history[col] = pd.to_numeric(history[col], errors="coerce")  # a cut-short last line reads as NaN
    return history.dropna(subset=["epoch", "step"]), ""


def read_job(job_dir: Path, metric: str = "best_monitored") -> Job:
    """One job directory; `metric` ranks the report (its test counterpart judges the gain: diagnose.py)."""
    config, overrides = _read_config(job_dir)
    history, note = _read_history(job_dir)
    metrics: dict[str, Any] = {}
    metrics_path = job_dir / METRICS
    if metrics_path.exists():
        try:
            loaded = json.loads(metrics_path.read_text())
            if not isinstance(loaded, dict):
                raise ValueError("not a JSON object")
            metrics = loaded
            status = str(metrics.get("status"))
            state = State(status) if status in {s.value for s in State} else State.unreadable
            if state == State.unreadable:
                note = f"unknown status {status!r}"
        except (OSError, ValueError) as e:
            state, note = State.unreadable, f"{METRICS} unreadable: {e}"
    else:
        state = State.running if is_running(job_dir) else State.unfinished
        if history is not None and state == State.unfinished:
            note = f"stopped after {len(history) - 1} validation checks; rerun the sweep to continue"
    if state in (State.completed, State.pruned, State.diverged) and (why := weights.damage(job_dir, metrics)):
        state, note = State.damaged, f"{why}; rerun the sweep to retrain it"  # never ranked or recommended
    job = Job(job_dir, state, metrics, config, overrides, history=history, note=note)
    if history is not None:
        job.losses = [float(v) for v in history.sort_values("step", kind="stable")["val_loss"]]
    if state == State.pruned:
        job.note = f"pruned at check {metrics.get('pruned_at_check')} ({metrics.get('pruned_reason')})"
        if metrics.get("test_skipped"):  # the default (moirai_ft/search/prune.py pruned_test_config says why)
            job.note += f"; not tested: python -m moirai_ft.evaluate {job_dir} tests it"
    if state == State.lr_find:
        job.note = lr_find_note(metrics)
    if state == State.not_started:
        job.note = not_started_note(metrics)
    if state in (State.completed, State.diverged):
        try:
            job.findings = diagnose(job.losses, metrics, config, judged=judged_metric(metric, metrics.get("monitor"), config.get("monitors")))
        except Exception as e:  # noqa: BLE001 - a hand-edited metrics.json costs its diagnosis, not the report
            job.note = f"no diagnosis: {type(e).__name__}: {e}"
    if metrics.get("test_error"):  # trained, but its test evaluation failed: no test metrics to rank it by
        job.note = "; ".join(filter(None, [no_test_result(job_dir, metrics), job.note]))
    return job


def no_test_result(job_dir: Path, metrics: dict[str, Any]) -> str:
    return (f"no test result: the test evaluation failed ({metrics['test_error']}; eval_error.log); "
            f"re-evaluate with python -m moirai_ft.evaluate {job_dir}")


def lr_find_note(metrics: dict[str, Any]) -> str:
    s, sweep = metrics.get("lr_suggestion"), metrics.get("lr_sweep") or []
    if s is None:
        return "lr finder: no suggestion (the loss never fell)"
    return f"lr finder: suggestion {s:.3g}; sweep -m lr={','.join(f'{v:g}' for v in sweep)}"


def not_started_note(metrics: dict[str, Any]) -> str:
    planned, left = metrics.get("planned_s"), metrics.get("budget_left_s")
    return (f"{State.not_started.value}: the plan said {format_duration(planned) if planned is not None else 'it'}, "
            f"{format_duration(left)} of the budget was left; rerun the same command with a larger budget=")
