"""Everything `python analyze.py PATH` reports: the job directories below PATH with their state, one
table (printed, and written as summary.csv / summary.md / summary.json), the section 7 diagnosis of
each job, the best configuration per model and overall, and, from a finished small stage, the
base-stage command.

Reading never raises on a job directory: a running job, a failed or diverged one, a metrics.json cut
short or a missing history each become a row with its state and a note.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from moirai_ft.artifacts import CHECKPOINTS, HISTORY, LOGS, METRICS, read_json, write_json_atomic
from moirai_ft.analysis.diagnose import PATTERN_LADDER, Finding, apply_overrides, diagnose
from moirai_ft import weights
from moirai_ft.errors import UserError
from moirai_ft.result import NESTED_FIELDS
from moirai_ft.evaluation.bootstrap import significant
from moirai_ft.analysis.search import lr_find_note, search_lines
from moirai_ft.sweep.state import FINGERPRINT, LINK, is_running, read_link

CONF = Path(__file__).resolve().parents[2] / "conf"
SUMMARY = "summary"  # summary.csv, summary.md, summary.json
JOB_MARKERS = (METRICS, FINGERPRINT, HISTORY, LINK)
NESTED = (CHECKPOINTS, LOGS, ".hydra", "plots")  # inside a job directory: never job directories


class State(str, Enum):
    completed = "completed"
    pruned = "pruned"  # stopped early by the sweep's pruner or the zero-shot rule; its best weights are its result
    diverged = "diverged"
    running = "running"  # a process holds the job's lock now
    unfinished = "unfinished"  # no metrics.json and nobody running it: killed, or not started yet
    failed = "failed"
    unreadable = "unreadable"  # metrics.json exists but is not a JSON object (cut short, edited)
    damaged = "damaged"  # finished, but checkpoints/best no longer matches its recorded checksum
    lr_find = "lr_find"  # an lr range test (lr_find=true): a suggestion, no trained model


STATE_ORDER = list(State)  # table order after the metric: results first, then what needs attention
ROW_COLUMNS = (
    "job", "model", "family", "pattern", "lr", "scheduler", "state", "best_val_loss", "best_epoch", "epochs_run",
    "stop_reason", "zero_shot_val_loss",
)
TAIL_COLUMNS = ("wall_s", "train_samples_per_s", "error")
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
        return "python train.py " + " ".join(shlex.quote(o) for o in apply_overrides(self.overrides, changes or {}))


def _get(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict):
            return None
        tree = tree.get(part)
    return tree


# ---------------------------------------------------------------------------------------------------
# finding and reading job directories


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


def read_job(job_dir: Path) -> Job:
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
    if state == State.lr_find:
        job.note = lr_find_note(metrics)
    if state in (State.completed, State.diverged):
        try:
            job.findings = diagnose(job.losses, metrics, config)
        except Exception as e:  # noqa: BLE001 - a hand-edited metrics.json costs its diagnosis, not the report
            job.note = f"no diagnosis: {type(e).__name__}: {e}"
    if metrics.get("test_error"):  # trained, but its test evaluation failed: no test metrics to rank it by
        job.note = "; ".join(filter(None, [no_test_result(job_dir, metrics), job.note]))
    return job


def no_test_result(job_dir: Path, metrics: dict[str, Any]) -> str:
    return (f"no test result: the test evaluation failed ({metrics['test_error']}; eval_error.log); "
            f"re-evaluate with python -m moirai_ft.evaluate {job_dir}")


# ---------------------------------------------------------------------------------------------------
# the table


def metric_columns(jobs: list[Job]) -> list[str]:
    """test.*, zero_shot_test.*, rel_improvement.* present in any job, in a stable order."""
    cols: list[str] = []
    for group in NESTED_METRICS:
        names = sorted({n for j in jobs for n in (j.metrics.get(group) or {}) if isinstance(j.metrics.get(group), dict)})
        cols += [f"{group}.{n}" for n in names]
    return cols


def higher_is_better(metric: str) -> bool:
    return metric.startswith("rel_improvement.")


def sort_jobs(jobs: list[Job], metric: str) -> list[Job]:
    """Results first (completed and diverged: a diverged job keeps its best weights), best metric
    first, no value last; then the rest by state: running, unfinished, failed, unreadable."""
    sign = -1.0 if higher_is_better(metric) else 1.0

    def number(job: Job) -> float:
        value = job.value(metric)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return sign * float(value) if ok else math.inf

    results = [j for j in jobs if j.state in (State.completed, State.pruned, State.diverged)]
    rest = [j for j in jobs if j not in results]
    return (sorted(results, key=lambda j: (number(j), str(j.path)))
            + sorted(rest, key=lambda j: (STATE_ORDER.index(j.state), str(j.path))))


def significance_columns(jobs: list[Job]) -> list[str]:
    """significant.<metric> for the test metrics with a bootstrap interval in any job."""
    names = sorted({n for j in jobs for n in (j.metrics.get("rel_improvement_ci") or {})})
    return [f"significant.{n}" for n in names]


def table(jobs: list[Job], root: Path) -> pd.DataFrame:
    sig_cols = significance_columns(jobs)
    cols = list(ROW_COLUMNS) + metric_columns(jobs) + sig_cols + list(TAIL_COLUMNS)
    rows = []
    for job in jobs:
        row: dict[str, Any] = {c: job.value(c) for c in cols if c not in sig_cols}
        # True/False: the 95% interval of the improvement excludes/includes 0 (moirai_ft/evaluation/bootstrap.py)
        row.update({c: significant((job.metrics.get("rel_improvement_ci") or {}).get(c.split(".", 1)[1]))
                    for c in sig_cols})
        row["job"] = _rel(job.path, root)
        row["state"] = job.state.value
        row["error"] = job.metrics.get("error") or job.note or None
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root.resolve())) or "."
    except ValueError:
        return str(path)


def printable(report: Report) -> pd.DataFrame:
    """The table as printed: rank first, each test metric as `value (+x% vs zero-shot)`, the job's
    directory last (the full numbers are in summary.csv/json)."""
    frame = report.frame
    out = pd.DataFrame({"#": range(1, len(frame) + 1)})
    for col in ROW_COLUMNS[1:]:
        out[col] = frame[col].values
    for col in (c for c in frame.columns if c.startswith("test.")):
        name = col.split(".", 1)[1]
        rel = frame.get(f"rel_improvement.{name}")
        sig = frame.get(f"significant.{name}")
        # "n.s.": the improvement's 95% bootstrap interval includes 0, it may be noise
        marks = [" n.s." if s is False else "" for s in (sig if sig is not None else [None] * len(frame))]
        out[name] = [
            _fmt_cell(v) + (f" ({r:+.1%}{m})" if rel is not None and isinstance(r, float) and not math.isnan(r) else "")
            for v, r, m in zip(frame[col], rel if rel is not None else [None] * len(frame), marks)
        ]
    if "test_without_covariates.mae" in frame.columns:  # jobs with covariates: did they help? (the rest in summary.csv)
        out["mae_without_covariates"] = [_fmt_cell(v) for v in frame["test_without_covariates.mae"]]
    for col in ("wall_s", "train_samples_per_s", "job"):
        out[col] = frame[col].values
    return out.dropna(axis=1, how="all")


# ---------------------------------------------------------------------------------------------------
# recommendations and the next stage


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


def _experiment(job: Job) -> str | None:
    for o in job.overrides:
        if o.split("=", 1)[0].lstrip("+") == "experiment":
            return o.split("=", 1)[1]
    return None


def in_small_stage(job: Job) -> bool:
    exp = _experiment(job)
    return (exp or "").startswith("small_") or job.value("model") == "small"


def best_by_model(jobs: list[Job], metric: str) -> dict[str, Job]:
    """The best completed job per model (jobs already sorted best first)."""
    best: dict[str, Job] = {}
    for job in jobs:
        value = job.value(metric)
        if job.state == State.completed and isinstance(value, (int, float)) and math.isfinite(value):
            best.setdefault(str(job.value("model")), job)
    return best


# every override an experiment sets, and the preset: the base stage sets them anew
STAGE_KEYS = ("experiment", "sweep", "model", "pattern", "lr", "epochs", "batch_size", "patience", "warmup_steps")


def base_stage_command(jobs: list[Job], metric: str) -> tuple[str | None, str]:
    """The seed's phase 3: from a finished small stage, the base experiments ordered by how each
    pattern did on small (best pattern first), with the small stage's other overrides carried over.
    Returns (command or None, why)."""
    small = [j for j in jobs if in_small_stage(j)]
    if not small:
        return None, "no small-stage job found (model=small or experiment=small_*)"
    pending = [j for j in small if j.state in (State.running, State.unfinished)]
    if pending:
        return None, f"the small stage is not finished: {len(pending)} job(s) running or unfinished"
    done = [j for j in small if j.state == State.completed and j.value(metric) is not None]
    if not done:
        return None, "no small-stage job completed"
    pattern_rank: list[str] = []
    for job in done:  # sorted best first
        if str(job.value("pattern")) not in pattern_rank:
            pattern_rank.append(str(job.value("pattern")))
    pattern_rank += [p for p in PATTERN_LADDER if p not in pattern_rank]
    base = stage_order("base_stage")
    ordered = sorted(base, key=lambda e: (pattern_rank.index(str(experiment_values(e)["pattern"])), base.index(e)))
    keys = [(o, o.split("=", 1)[0].lstrip("+~")) for o in done[0].overrides]
    # model.* (a local small checkpoint, say) describes the small model: never carried to base
    dropped = [o for o, k in keys if k.startswith("model.")]
    carried = [o for o, k in keys if k not in STAGE_KEYS and not k.startswith("model.")]
    command = " ".join(["python train.py -m", f"experiment={','.join(ordered)}", *map(shlex.quote, carried)])
    why = f"small stage finished ({len(done)} completed); patterns ranked on small: {' > '.join(pattern_rank)}"
    if dropped:
        why += f"; not carried, set them for base: {' '.join(dropped)}"
    return command, why


# ---------------------------------------------------------------------------------------------------
# the report


@dataclass
class Report:
    root: Path
    metric: str
    jobs: list[Job]
    frame: pd.DataFrame
    best: dict[str, Job]
    next_stage: tuple[str | None, str]


def analyze(root: Path, metric: str = "best_val_loss") -> Report:
    root = Path(root)
    if not root.exists():
        raise UserError(f"{root} does not exist; give analyze.py a sweep directory or a root above several (multirun/)")
    jobs = [read_job(d) for d in find_job_dirs(root)]
    if not jobs:
        raise UserError(f"no job directories below {root}; point analyze.py at multirun/ or one sweep's directory")
    # best_monitored: the value `monitor=` selected on (val_crps, val_mae), what the sweeper minimised
    monitored = ["best_monitored"] if any("best_monitored" in j.metrics for j in jobs) else []
    allowed = ["best_val_loss", "zero_shot_val_loss"] + monitored + metric_columns(jobs)
    if metric not in allowed:
        raise UserError(f"--metric {metric} is not in these jobs; use one of: {', '.join(allowed)}")
    jobs = sort_jobs(jobs, metric)
    return Report(root, metric, jobs, table(jobs, root), best_by_model(jobs, metric), base_stage_command(jobs, metric))


def _fmt_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    cols = [c for c in frame.columns if frame[c].notna().any()]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt_cell(v) for v in row) + " |" for row in frame[cols].itertuples(index=False)]
    return "\n".join(lines)


def advice_lines(report: Report) -> list[str]:
    """Diagnosis, recommendations and the next stage, as printed and as in summary.md."""
    lines = ["Diagnosis (the seed's section 7 rules):"]
    for rank, job in enumerate(report.jobs, start=1):
        name = f"#{rank} {job.value('model')} {job.value('pattern')} lr={job.value('lr')}"
        if job.state == State.failed:
            lines.append(f"- {name}: FAILED: {job.metrics.get('error')}; fix it and rerun the sweep (completed jobs are skipped)")
        elif job.state in (State.running, State.unfinished, State.unreadable, State.damaged):
            lines.append(f"- {name}: {job.state.value.upper()}{': ' + job.note if job.note else ''}")
        elif not job.findings or job.metrics.get("test_error"):
            lines.append(f"- {name}: {job.note or 'healthy, no rule fired'}")
        for finding in job.findings:
            lines.append(f"- {name}: {finding.rule.value}: {finding.message}")
            lines += [f"    next: {job.command(alt)}" for alt in finding.alternatives]
    lines.append("")
    lines.append(f"Best by {report.metric}:")
    for model, job in report.best.items():
        lines.append(f"- {model}: {job.value(report.metric):.4g} {_rel(job.path, report.root)}")
        lines.append(f"    {job.command()}")
    if report.best:  # jobs are sorted best first: the first per-model winner is the overall one
        overall = next(j for j in report.jobs if any(j is b for b in report.best.values()))
        lines.append(f"- overall: model={overall.value('model')} pattern={overall.value('pattern')} "
                     f"lr={overall.value('lr')} ({_rel(overall.path, report.root)})")
    lines += search_lines(report.jobs, report.metric)  # lr-finder suggestions, seed repeats
    command, why = report.next_stage
    lines += ["", f"Base stage (the seed's phase 3): {why}"]
    if command:
        lines.append(f"    {command}")
    return lines


def write_summary(report: Report, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, json_path = (out / f"{SUMMARY}.{ext}" for ext in ("csv", "md", "json"))
    report.frame.to_csv(csv_path, index=False)
    md_path.write_text(f"# Sweep summary: {report.root}\n\nSorted by {report.metric}, best first.\n\n"
                       + markdown_table(report.frame) + "\n\n" + "\n".join(advice_lines(report)) + "\n")
    write_json_atomic(json_path, {
        "root": str(report.root), "metric": report.metric,
        "jobs": [{
            "job": _rel(j.path, report.root), "state": j.state.value, "note": j.note or None,
            "metrics": j.metrics, "overrides": j.overrides, "command": j.command(),
            "diagnosis": [{"rule": f.rule.value, "message": f.message, "next": [j.command(a) for a in f.alternatives]}
                          for f in j.findings],
        } for j in report.jobs],
        "best": {m: _rel(j.path, report.root) for m, j in report.best.items()},
        "base_stage_command": report.next_stage[0], "base_stage_note": report.next_stage[1],
    })
    return [csv_path, md_path, json_path]
