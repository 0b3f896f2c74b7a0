"""The two pictures of a sweep: learning_curves.png (validation loss against step, one panel per
model x pattern, one line per job, its zero-shot level dashed) and lr_pattern_heatmap.png (the best
metric by lr x pattern, one panel per model)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node or in tests
import matplotlib.patheffects as patheffects  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from jaxtyping import Float  # noqa: E402

from moirai_ft.analysis.jobs import Job, State  # noqa: E402
from moirai_ft.analysis.diagnose import PATTERN_LADDER  # noqa: E402

LEARNING_CURVES = "learning_curves.png"
HEATMAP = "lr_pattern_heatmap.png"


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _pattern_order(patterns: set[str]) -> list[str]:
    return [p for p in PATTERN_LADDER if p in patterns] + sorted(patterns - set(PATTERN_LADDER))


def learning_curves(jobs: list[Job], path: Path) -> Path:
    with_history = [j for j in jobs if j.history is not None and len(j.history)]
    groups: dict[tuple[str, str], list[Job]] = {}
    for job in with_history:
        groups.setdefault((str(job.value("model")), str(job.value("pattern"))), []).append(job)
    keys = sorted(groups, key=lambda k: (k[0], _pattern_order({p for _, p in groups}).index(k[1])))
    rows, cols = _grid(max(1, len(keys)))
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.8 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for i, job in enumerate(sorted(groups[key], key=lambda j: float(j.value("lr") or 0))):
            color = f"C{i % 10}"
            h = job.history.sort_values("step", kind="stable")  # type: ignore[union-attr]
            label = f"lr={job.value('lr')} {job.value('scheduler') or ''}".strip()
            if job.state != State.completed:
                label += f" ({job.state.value})"
            ax.plot(h["step"], h["val_loss"], marker="o", ms=3, color=color, label=label)
            zero_shot = job.metrics.get("zero_shot_val_loss")
            if zero_shot is None and len(h) and int(h["epoch"].iloc[0]) == -1:
                zero_shot = float(h["val_loss"].iloc[0])
            if zero_shot is not None:
                ax.axhline(zero_shot, color=color, ls="--", lw=0.8, alpha=0.7)
        ax.set_title(f"model={key[0]} pattern={key[1]}  (dashed: zero-shot)")
        ax.set_xlabel("training step")
        ax.set_ylabel("validation loss")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, axes, len(keys), "no training history yet", path)


def cell_values(jobs: list[Job], metric: str, model: str, higher_better: bool) -> tuple[list[str], list[float], Float[np.ndarray, "pattern lr"]]:
    """(patterns, lrs, values): the best metric of the completed jobs in each pattern x lr cell, NaN where none."""
    mine = [j for j in jobs if str(j.value("model")) == model and j.state == State.completed
            and isinstance(j.value(metric), (int, float)) and j.value("lr") is not None]
    patterns = _pattern_order({str(j.value("pattern")) for j in mine})
    lrs = sorted({float(j.value("lr")) for j in mine})
    grid = np.full((len(patterns), len(lrs)), np.nan)
    pick = max if higher_better else min
    for job in mine:
        r, c = patterns.index(str(job.value("pattern"))), lrs.index(float(job.value("lr")))
        value = float(job.value(metric))
        grid[r, c] = value if np.isnan(grid[r, c]) else pick(grid[r, c], value)
    return patterns, lrs, grid


def heatmap(jobs: list[Job], metric: str, higher_better: bool, path: Path) -> Path:
    models = sorted({str(j.value("model")) for j in jobs if j.state == State.completed})
    rows, cols = _grid(max(1, len(models)), max_cols=2)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.5 * rows), squeeze=False)
    for ax, model in zip(axes.flat, models):
        patterns, lrs, grid = cell_values(jobs, metric, model, higher_better)
        # the best cell brightest (and framed) whichever direction the metric goes
        im = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis" if higher_better else "viridis_r", aspect="auto")
        if not np.all(np.isnan(grid)):
            r, c = np.unravel_index(np.nanargmax(grid) if higher_better else np.nanargmin(grid), grid.shape)
            ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
        ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
        ax.set_yticks(range(len(patterns)), patterns)
        for (r, c), value in np.ndenumerate(grid):
            if not np.isnan(value):
                ax.text(c, r, f"{value:.4g}", ha="center", va="center", color="white", fontsize=8,
                        path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])
        ax.set_title(f"model={model}: {metric} ({'higher' if higher_better else 'lower'} is better; best framed)")
        ax.set_xlabel("lr")
        fig.colorbar(im, ax=ax)
    return _save(fig, axes, len(models), "no completed job yet", path)


def _save(fig: plt.Figure, axes: np.ndarray, used: int, empty_text: str, path: Path) -> Path:
    """Blank the unused panels (or say why there is nothing to draw), write the PNG, free the figure."""
    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    if not used:
        axes[0, 0].text(0.5, 0.5, empty_text, ha="center", va="center")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
