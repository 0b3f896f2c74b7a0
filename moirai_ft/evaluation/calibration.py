"""calibrate=conformal: conformalized quantile regression (CQR) of every forecast level, per horizon step.

A model fine-tuned for a few hundred steps is often over-confident: its 80% band holds 60% of what
happens. CQR (Romano, Patterson and Candes 2019) corrects each quantile with the residuals it left on
held-out data. Here, for each level tau and horizon step h, on the validation windows' observed targets:

    r_i = y_i,h - q_i,tau,h                   (normalised scale: columns are comparable)
    offset[tau, h] = r_(k), k = ceil((n + 1) tau) for tau >= 0.5, floor((n + 1) tau) for tau < 0.5

(r_(k) the k-th smallest residual, clipped to the first and last). The calibrated quantile is q + offset,
then the levels are sorted so they never cross. If validation and test residuals are exchangeable, the
rank of a new residual among the n + 1 is uniform, so P(y <= q + offset) is k / (n + 1): at least tau for the
upper levels and at most tau for the lower ones, and the band (tau, 1 - tau) covers at least 1 - 2 tau.

Exchangeability is the assumption that matters: it breaks when the test period behaves differently from
the validation period (a building whose load drifts, a new control regime, a season the validation did not
see), and then the calibrated bands are only as good as the validation period is representative. The
selected model was also chosen on these windows, which makes its validation residuals a little small.

Pure numpy; the job fits it (moirai_ft/evaluation/compare.py), saves it as calibration.json next to the
weights, and applies it to the test forecasts and in the forecaster.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float

from moirai_ft.artifacts import write_json_atomic

CALIBRATION = "calibration.json"
METHOD = "conformal"


@dataclass(frozen=True)
class Calibration:
    """Additive offsets per (level, horizon step) on the normalised scale, fitted on `count` residuals per
    step (the smallest count over the steps)."""

    levels: tuple[float, ...]
    offsets: Float[np.ndarray, "level pred"]
    count: int

    @property
    def prediction_length(self) -> int:
        return int(self.offsets.shape[1])

    def apply(self, quantiles: Float[np.ndarray, "item level pred"]) -> Float[np.ndarray, "item level pred"]:
        """The calibrated quantiles (normalised scale, the levels of the fit), sorted along the levels."""
        quantiles = np.asarray(quantiles)
        if quantiles.shape[1:] != self.offsets.shape:
            raise ValueError(f"forecast of shape {quantiles.shape[1:]} (level, step), calibration fitted on "
                             f"{self.offsets.shape}")
        return np.sort(quantiles + self.offsets.astype(quantiles.dtype), axis=1)

    def to_dict(self) -> dict[str, Any]:
        return {"method": METHOD, "levels": list(self.levels), "count": self.count,
                "offsets": self.offsets.tolist()}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Calibration:
        return cls(tuple(float(q) for q in record["levels"]), np.asarray(record["offsets"], np.float64),
                   int(record["count"]))


def conformal_rank(n: int, level: float) -> int:
    """The 1-based rank of the residual CQR takes for `level` out of n (see the module's docstring)."""
    k = math.ceil((n + 1) * level - 1e-9) if level >= 0.5 else math.floor((n + 1) * level + 1e-9)
    return min(max(k, 1), n)


def fit_conformal(
    label: Float[np.ndarray, "item pred"],
    quantiles: Float[np.ndarray, "item level pred"],
    levels: tuple[float, ...],
) -> Calibration:
    """Offsets from the validation windows' targets and the forecast's quantiles (both normalised).
    A horizon step with no observed target keeps offset 0."""
    label = np.asarray(label, np.float64)
    quantiles = np.asarray(quantiles, np.float64)
    residuals = label[:, None, :] - quantiles  # (item, level, pred), NaN where the target is missing
    observed = np.isfinite(label)
    offsets = np.zeros(quantiles.shape[1:])
    counts = observed.sum(axis=0)
    for h in range(label.shape[1]):
        n = int(counts[h])
        if n == 0:
            continue
        ordered = np.sort(residuals[observed[:, h], :, h], axis=0)  # (n, level)
        for j, tau in enumerate(levels):
            offsets[j, h] = ordered[conformal_rank(n, tau) - 1, j]
    return Calibration(tuple(levels), offsets, int(counts.min()) if counts.size else 0)


def save(calibrations: dict[str, Calibration], job_dir: Path) -> Path:
    """calibration.json: one fit per forecast the job offers ("fine-tuned", and "blend" with blend=true)."""
    path = Path(job_dir) / CALIBRATION
    write_json_atomic(path, {name: c.to_dict() for name, c in calibrations.items()})
    return path


def load(job_dir: Path) -> dict[str, Calibration] | None:
    """The job's calibrations, None when it ran without calibrate=conformal."""
    path = Path(job_dir) / CALIBRATION
    if not path.is_file():
        return None
    return {name: Calibration.from_dict(record) for name, record in json.loads(path.read_text()).items()}
