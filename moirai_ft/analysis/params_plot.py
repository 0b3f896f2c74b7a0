"""plots/params_vs_metric.png: trainable parameters against the ranking metric, one point per completed
job, a colour per model and a marker per pattern: what each pattern (LoRA, head_only, ...) buys for the
parameters it trains. Validation losses of different families are different objectives (Moirai 1.x and
MoE: NLL; Moirai 2.0: pinball), so across families rank by a test metric (analyze.py --metric test.mase)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402

from moirai_ft.analysis.jobs import Job, State  # noqa: E402

PARAMS_VS_METRIC = "params_vs_metric.png"
MARKERS = "osD^v<>px*"


def params_vs_metric(jobs: list[Job], metric: str, higher_better: bool, path: Path) -> Path:
    done = [j for j in jobs if j.state == State.completed and isinstance(j.value(metric), (int, float))
            and isinstance(j.metrics.get("trainable_params"), int)]
    models = sorted({str(j.value("model")) for j in done})
    patterns = sorted({str(j.value("pattern")) for j in done})
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for job in done:
        m, p = models.index(str(job.value("model"))), patterns.index(str(job.value("pattern")))
        ax.scatter(job.metrics["trainable_params"], float(job.value(metric)), color=f"C{m % 10}",
                   marker=MARKERS[p % len(MARKERS)], s=45)
    for m, model in enumerate(models):  # legend entries: colours are models, markers patterns
        ax.scatter([], [], color=f"C{m % 10}", marker="o", label=f"model={model}")
    for p, pattern in enumerate(patterns):
        ax.scatter([], [], color="grey", marker=MARKERS[p % len(MARKERS)], label=f"pattern={pattern}")
    if done:
        ax.set_xscale("log")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no completed job yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel(metric)
    ax.set_title(f"trainable parameters vs {metric} ({'higher' if higher_better else 'lower'} is better)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
