"""The seed plan's section 7 tuning rules, applied to one job's validation history and metrics, each
ending in the next Hydra overrides to try.

| rule | seen in the job | next overrides (alternatives) |
|---|---|---|
| oscillating | validation loss goes down and up again (7.1) | `lr` / 2 and `warmup_steps` x 2 |
| flat | no validation check moved from the zero-shot loss (7.2) | `lr` x 2; or unfreeze more: head_only -> freeze_ffn -> full |
| stopped_early | early stopping with the best check in epoch 0 or 1 (7.3) | more `patience`; or validate twice as often |
| worse_than_zero_shot | no check beat the zero-shot model, or most test metrics worse than zero-shot's | `lr` / 2; or half the `epochs` |
| diverged | the loss became NaN or infinite | as oscillating: `lr` / 2, `warmup_steps` x 2 |
| unchecked | `val_check_interval` (steps) longer than the run: no check during training | a quarter of the run; every other rule's next run gets it too |
| not_significant | the gain on the ranking metric's test counterpart has a 95% bootstrap interval that includes 0: within noise | re-evaluate on every test window (when `eval.max_windows` capped them); a longer run (when the last check was still the best); seed repeats `-m seed=s,s+1,s+2` |

Flat excludes oscillating and worse_than_zero_shot: with nothing moving, "lower the lr" would be wrong.
not_significant is the verdict on a job no other rule explains: a gain that may be noise is not "healthy".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Sequence

from moirai_ft.config.presets import monitored_metric
from moirai_ft.evaluation.bootstrap import significant

# 7.2: unfreeze one step at a time, over the shipped patterns (a pattern of one's own is on no rung: no
# "unfreeze more" alternative is offered for it)
PATTERN_LADDER = ("head_only", "freeze_ffn", "full")


class Rule(str, Enum):
    oscillating = "oscillating"
    flat = "flat"
    stopped_early = "stopped_early"
    worse_than_zero_shot = "worse_than_zero_shot"
    diverged = "diverged"
    unchecked = "unchecked"
    not_significant = "not_significant"


TEST_GROUPS = ("test.", "zero_shot_test.", "rel_improvement.")


def judged_metric(ranking: str, monitor: Any, monitors: Any = None) -> str:
    """The test metric whose improvement decides whether a job's gain on `ranking` is real: for a job ranked by
    its monitor, the test metric the monitor is computed as (conf/monitors: val_crps wql, val_mae mae; the
    job's registry `monitors`, else the shipped one); the NLL has no test interval, wql is its probabilistic kin."""
    if ranking.startswith(TEST_GROUPS):
        return ranking.split(".", 1)[1]
    if ranking == "best_monitored":
        return monitored_metric(monitor or "val_nll", monitors) or "wql"
    return "wql"  # best_val_loss, zero_shot_val_loss: the NLL's


@dataclass(frozen=True)
class Thresholds:
    """Scale-free: moves are measured against max(|zero-shot loss|, floor), NLL being possibly near 0."""

    floor: float = 0.1
    move: float = 0.01  # a change of 1% of that scale is a move; smaller ones are noise
    flat: float = 0.01  # flat: every fine-tuning check within 1% of the zero-shot loss
    rebound: float = 0.3  # oscillating: the rises add up to >= 30% of the falls, with >= 2 turns
    min_checks: int = 3  # fine-tuning checks needed to call a curve oscillating


@dataclass(frozen=True)
class Finding:
    rule: Rule
    message: str
    alternatives: list[dict[str, str]] = field(default_factory=list)  # each: overrides to set
    reevaluate: dict[str, str] | None = None  # overrides for `python -m moirai_ft.evaluate <job>`: no retraining


def _fmt(value: float) -> str:
    """A float as Hydra reads it back, short: 5e-06, 0.0001 -> 0.0001."""
    return f"{value:.6g}"


def _scale(zero_shot: float, t: Thresholds) -> float:
    return max(abs(zero_shot), t.floor)


def is_oscillating(losses: Sequence[float], t: Thresholds = Thresholds()) -> bool:
    """losses: the zero-shot check then every fine-tuning check, in order."""
    finite = [v for v in losses if math.isfinite(v)]
    if len(finite) < t.min_checks + 1:
        return False
    scale = _scale(finite[0], t)
    moves = [b - a for a, b in zip(finite, finite[1:]) if abs(b - a) >= t.move * scale]
    turns = sum(1 for a, b in zip(moves, moves[1:]) if (a > 0) != (b > 0))
    rises = sum(m for m in moves if m > 0)
    falls = -sum(m for m in moves if m < 0)
    return turns >= 2 and rises >= t.rebound * max(falls, t.move * scale)


def is_flat(losses: Sequence[float], t: Thresholds = Thresholds()) -> bool:
    finite = [v for v in losses if math.isfinite(v)]
    if len(finite) < 2:
        return False
    scale = _scale(finite[0], t)
    return all(abs(v - finite[0]) < t.flat * scale for v in finite[1:])


def _as_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _calmer(lr: float, warmup: int | float, total_steps: int | None) -> dict[str, str]:
    """7.1: halve lr, double warmup; from no warmup, 5% of the run (the seed's 5-10%). A warmup given as a
    fraction of the run (warmup_steps=0.05) doubles as a fraction, up to half the run."""
    if isinstance(warmup, float):
        return {"lr": _fmt(lr / 2), "warmup_steps": f"{min(2 * warmup, 0.5):g}"}
    new_warmup = 2 * warmup if warmup > 0 else max(1, round(0.05 * total_steps)) if total_steps else 50
    if total_steps:
        new_warmup = min(new_warmup, max(1, total_steps // 2))  # job.run_job refuses warmup > the run
    return {"lr": _fmt(lr / 2), "warmup_steps": str(new_warmup)}


def diagnose(
    losses: Sequence[float],
    metrics: dict[str, Any],
    config: dict[str, Any],
    t: Thresholds = Thresholds(),
    judged: str | None = None,
) -> list[Finding]:
    """Findings for one finished job. losses: validation loss per check, the zero-shot check first;
    metrics: its metrics.json; config: its resolved config (lr, warmup_steps, patience, epochs,
    val_check_interval, pattern.name, seed, eval.max_windows); judged: the test metric whose interval
    says whether the gain is real (judged_metric). Only the rules whose inputs are present are tried."""
    findings: list[Finding] = []
    lr = _as_float(config.get("lr", metrics.get("lr")))
    warmup = config.get("warmup_steps") or 0
    warmup = warmup if isinstance(warmup, float) and 0 < warmup < 1 else int(warmup)  # a fraction or steps
    epochs = int(config.get("epochs") or 0)
    patience = int(config.get("patience") or 1)
    pattern = str((config.get("pattern") or {}).get("name", metrics.get("pattern", "")))
    steps_run, epochs_run = _as_float(metrics.get("steps_run")), _as_float(metrics.get("epochs_run"))
    total_steps = round(steps_run / epochs_run * epochs) if steps_run and epochs_run and epochs else None

    if metrics.get("status") == "diverged":
        findings.append(Finding(Rule.diverged, "the loss became NaN or infinite: calm the start and the step size",
                                [_calmer(lr, warmup, total_steps)] if lr else []))

    flat = is_flat(losses, t)
    if flat:
        alts = [{"lr": _fmt(lr * 2)}] if lr else []
        if pattern in PATTERN_LADDER[:-1]:
            alts.append({"pattern": PATTERN_LADDER[PATTERN_LADDER.index(pattern) + 1]})
        findings.append(Finding(Rule.flat, "validation loss did not move from the zero-shot level: "
                                "the lr is too small or too much is frozen", alts))
    elif is_oscillating(losses, t):
        findings.append(Finding(Rule.oscillating, "validation loss goes down and up again: lr too high "
                                "or warmup too short", [_calmer(lr, warmup, total_steps)] if lr else []))

    best_epoch = metrics.get("best_epoch")
    if metrics.get("stop_reason") == "early_stopping" and isinstance(best_epoch, int) and best_epoch in (0, 1):
        vci = config.get("val_check_interval")
        alts = [{"patience": str(max(2 * patience, epochs // 3))}]
        if isinstance(vci, float):
            alts.append({"val_check_interval": _fmt(vci / 2), "patience": str(2 * patience)})
        elif isinstance(vci, int) and vci > 1:
            alts.append({"val_check_interval": str(vci // 2), "patience": str(2 * patience)})
        findings.append(Finding(Rule.stopped_early, f"early stopping with the best check in epoch {best_epoch}: "
                                "give it more patience or validate more often", alts))

    rel = {k: _as_float(v) for k, v in (metrics.get("rel_improvement") or {}).items()}
    rel = {k: v for k, v in rel.items() if v is not None}
    worse_on_test = sorted(k for k, v in rel.items() if v < 0)
    mostly_worse = len(worse_on_test) > len(rel) / 2  # one metric of several slipping is noise
    no_check_beat = metrics.get("status") == "completed" and metrics.get("finetune_helped") is False
    if not flat and (no_check_beat or mostly_worse):
        why = ("no fine-tuning check beat the zero-shot validation loss" if no_check_beat
               else f"{len(worse_on_test)} of {len(rel)} test metrics worse: " + ", ".join(worse_on_test))
        alts = [{"lr": _fmt(lr / 2)}] if lr else []
        if epochs > 1:
            alts.append({"epochs": str(max(1, epochs // 2))})
        findings.append(Finding(Rule.worse_than_zero_shot, f"fine-tuned worse than zero-shot ({why}): "
                                "lower the lr or train fewer epochs", alts))
    explained = {Rule.flat, Rule.worse_than_zero_shot, Rule.diverged}
    if judged and not any(f.rule in explained for f in findings):
        findings += _within_noise(metrics, config, judged)
    return _never_unchecked(findings, config.get("val_check_interval"), steps_run)


def _within_noise(metrics: dict[str, Any], config: dict[str, Any], judged: str) -> list[Finding]:
    """not_significant: the judged test metric's improvement has a 95% interval that includes 0. The next
    runs are what would settle it: every test window when eval.max_windows left some out (a
    re-evaluation, no training), a longer run when the last check was still the best, seed repeats."""
    ci = (metrics.get("rel_improvement_ci") or {}).get(judged)
    rel = _as_float((metrics.get("rel_improvement") or {}).get(judged))
    if metrics.get("finetune_helped") is False or rel is None or significant(ci) is not False:
        return []  # the result is the zero-shot model itself, or no interval, or a real gain (or loss)
    lo, hi = float(ci[0]), float(ci[1])
    windows = int((metrics.get("test_eval") or {}).get("windows") or 0)
    cap = (config.get("eval") or {}).get("max_windows")
    needed = ""
    if rel > 0 and windows and hi > lo:  # the interval narrows as 1/sqrt(windows): when would it clear 0?
        needed = f"; at this gain about {math.ceil(windows * ((hi - lo) / 2 / rel) ** 2)} test windows would tell"
    message = (f"gain within noise: test {judged} {rel:+.1%} vs zero-shot, 95% interval [{lo:+.1%}, {hi:+.1%}] "
               f"includes 0 over {windows} test windows{needed}; "
               "settle it with more test windows, a longer run or seed repeats before trusting the ranking")
    alts: list[dict[str, str]] = []
    steps_run, best_step = metrics.get("steps_run"), metrics.get("best_step")
    epochs = int(config.get("epochs") or 0)
    if metrics.get("stop_reason") == "max_epochs" and epochs and best_step is not None and best_step == steps_run:
        alts.append({"epochs": str(2 * epochs)})  # still improving at its last check
    seed = int(config.get("seed") or 0)
    alts.append({"seed": f"{seed},{seed + 1},{seed + 2}"})  # a sweep: analyze prints their mean ± std
    capped = isinstance(cap, int) and windows >= cap
    return [Finding(Rule.not_significant, message, alts, {"eval.max_windows": "null"} if capped else None)]


def _never_unchecked(findings: list[Finding], vci: Any, steps_run: float | None) -> list[Finding]:
    """An integer val_check_interval longer than the run checked nothing while training: say so, and give
    every next run an interval that fires, so no recommendation repeats the wasted setting."""
    if not (isinstance(vci, int) and not isinstance(vci, bool) and steps_run and vci > steps_run):
        return findings
    fix = {"val_check_interval": str(max(1, int(steps_run) // 4))}
    unchecked = Finding(Rule.unchecked, f"val_check_interval={vci} steps is longer than the run ({int(steps_run)} "
                        "steps): no validation check ran during training; validate more often", [fix])
    return [unchecked] + [Finding(f.rule, f.message, [{**alt, **fix} for alt in f.alternatives] or [fix], f.reevaluate)
                          for f in findings]


def apply_overrides(overrides: Sequence[str], changes: dict[str, str]) -> list[str]:
    """The job's command-line overrides with `changes` set: an existing `key=` (or `+key=`) is
    replaced in place, a new key appended; the sweep preset (sweep=...) is dropped (single job)."""
    out: list[str] = []
    done: set[str] = set()
    for o in overrides:
        prefix = o[: len(o) - len(o.lstrip("+~"))]
        key = o.split("=", 1)[0].lstrip("+~")
        if key == "sweep":
            continue
        if key in changes:
            out.append(f"{prefix}{key}={changes[key]}")
            done.add(key)
        else:
            out.append(o)
    out += [f"{k}={v}" for k, v in changes.items() if k not in done]
    return out
