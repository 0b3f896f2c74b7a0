"""blend=true: w x fine-tuned + (1 - w) x zero-shot, quantile by quantile, w chosen on validation.

Averaging quantiles (Vincentization) keeps a forecast's levels and never makes them cross. w comes from a
small grid that holds 0 (the zero-shot model alone) and 1 (the fine-tuned model alone), so on validation
the blend is never worse than either part; the test, with a paired bootstrap of the blend against each part,
says whether it is better there too. w = 0 and w = 1 return that part's own array: the blend's metrics are
then that part's exactly.

The weight is chosen by the job's monitor (moirai_ft/search/monitor.py): WQL for val_crps, MAE for val_mae.
val_nll has no value for an average of quantiles (it is no distribution with a density the model
returns), so a val_nll job chooses by WQL, the CRPS approximation, and says so in metrics.json.

Pure numpy; the forecaster reads the weight back from metrics.json (`recorded_weight`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float

from moirai_ft.errors import UserError

GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
FALLBACK_METRIC = "wql"  # for monitor=val_nll


def blend(
    finetuned: Float[np.ndarray, "item level pred"], zero_shot: Float[np.ndarray, "item level pred"], weight: float
) -> Float[np.ndarray, "item level pred"]:
    """w x fine-tuned + (1 - w) x zero-shot; the part itself at w = 1 and w = 0 (bit for bit)."""
    if weight == 1.0:
        return finetuned
    if weight == 0.0:
        return zero_shot
    return weight * finetuned + (1.0 - weight) * zero_shot


def choose_weight(
    finetuned: Float[np.ndarray, "item level pred"],
    zero_shot: Float[np.ndarray, "item level pred"],
    score: Callable[[np.ndarray], float],
    grid: Sequence[float] = GRID,
) -> tuple[float, dict[str, float]]:
    """The grid weight whose blend scores lowest (`score`: validation metric of quantiles, lower better),
    and every weight's score. On a tie the larger weight wins (the fine-tuned model, then the blends
    closest to it): fine-tuning that changed nothing leaves w = 1, the selected model."""
    scores = {f"{w:g}": float(score(blend(finetuned, zero_shot, float(w)))) for w in grid}
    finite = [(v, -float(w)) for w, v in scores.items() if math.isfinite(v)]
    if not finite:  # a broken forecast everywhere: the selected model, and the NaN scores say why
        return 1.0, scores
    return -min(finite)[1], scores


def recorded_weight(metrics: dict[str, Any], job_dir: Path) -> float:
    """The blend weight a job chose (metrics.json `blend_weight`); one line saying how to get one if none."""
    weight = metrics.get("blend_weight")
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0.0 <= weight <= 1.0:
        raise UserError(f"{job_dir} has no blend (it ran without blend=true); choose its weight without retraining: "
                        f"python -m moirai_ft.evaluate {job_dir} blend=true")
    return float(weight)
