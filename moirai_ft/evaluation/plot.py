"""forecast.png: a few test windows, one panel each, with context, truth, and every model's median
and 80% band, so the zero-shot and fine-tuned forecasts can be compared at a glance."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from jaxtyping import Float
from matplotlib.figure import Figure

from moirai_ft.data.prepare import PreparedData
from moirai_ft.evaluation.scoring import EvalItems
from moirai_ft.scores import LOWER_80, MEDIAN, UPPER_80

# one colour per model, in the order the forecasts are given
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


@dataclass
class Panel:
    """One test window in original units."""

    title: str
    context_time: pd.DatetimeIndex
    context: Float[np.ndarray, "ctx"]
    horizon_time: pd.DatetimeIndex
    truth: Float[np.ndarray, "pred"]
    # model label -> quantiles at scores.QUANTILE_LEVELS
    forecasts: dict[str, Float[np.ndarray, "level pred"]] = field(default_factory=dict)


def plot_forecasts(panels: list[Panel], path: Path | None = None) -> Figure:
    """One row per panel; saved as PNG to `path` when given. Returns the figure (no pyplot state:
    a bare Figure renders with the Agg canvas, so this works on headless machines and in threads)."""
    fig = Figure(figsize=(11, 2.6 * max(1, len(panels))), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0] if panels else []
    for ax, panel in zip(axes, panels):
        ax.plot(panel.context_time, panel.context, color="0.35", lw=0.9, label="context")
        if np.isfinite(panel.truth).any():  # a forecast past the data's end has no truth to draw
            ax.plot(panel.horizon_time, panel.truth, color="black", lw=1.2, label="truth")
        for colour, (label, q) in zip(COLOURS, panel.forecasts.items()):
            ax.fill_between(panel.horizon_time, q[LOWER_80], q[UPPER_80], color=colour, alpha=0.2, lw=0)
            ax.plot(panel.horizon_time, q[MEDIAN], color=colour, lw=1.2, label=f"{label} median, 80% band")
        ax.axvline(panel.horizon_time[0], color="0.6", lw=0.8, ls="--")
        ax.set_title(panel.title, fontsize=9, loc="left")
        ax.tick_params(labelsize=8)
    if panels:
        axes[0].legend(fontsize=8, loc="upper left", ncols=2)
    if path is not None:
        fig.savefig(path, dpi=90)
    return fig


def forecast_panels(
    data: PreparedData, items: EvalItems, forecasts: dict[str, Float[np.ndarray, "item level pred"]], count: int
) -> list[Panel]:
    """`count` evenly spaced items, in original units."""
    if count <= 0 or len(items.starts) == 0:
        return []
    picks = np.unique(np.linspace(0, len(items.starts) - 1, count).round().astype(int))
    ctx, pred = data.spec.context_length, data.spec.prediction_length
    index, values = data.table.index, data.table.values
    panels = []
    for i in picks:
        c, f = int(items.columns[i]), int(items.starts[i])
        to_orig = lambda q: q * data.std[c] + data.mean[c]  # noqa: E731
        panels.append(
            Panel(
                title=f"{data.table.columns[c]}, forecast from {index[f]}",
                context_time=index[f - ctx : f],
                context=values[f - ctx : f, c],
                horizon_time=index[f : f + pred],
                truth=values[f : f + pred, c],
                forecasts={label: to_orig(q[i]) for label, q in forecasts.items()},
            )
        )
    return panels
