"""Recommendations: the best completed job per model, and, from a finished small stage, the base-stage
command (the seed's phase 3)."""

from __future__ import annotations

import math
import shlex

from moirai_ft.analysis.blend import ranked_value
from moirai_ft.analysis.diagnose import PATTERN_LADDER
from moirai_ft.analysis.jobs import Job, State
from moirai_ft.config.presets import experiment_values, stage_order


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
        value = ranked_value(job, metric)
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
    pending = [j for j in small if j.state in (State.running, State.unfinished, State.not_started)]
    if pending:
        return None, f"the small stage is not finished: {len(pending)} job(s) running, unfinished or not started"
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
