"""analyze.py on constructed job directories: significance of improvements, pruned jobs, seed
aggregates and lr-finder suggestions (issue #13)."""

from __future__ import annotations

import json
from pathlib import Path

from moirai_ft.analysis.report import analyze, printable


def make_job(root: Path, name: str, **metrics) -> Path:
    job = root / name
    job.mkdir(parents=True)
    base = {"status": "completed", "model": "tiny", "pattern": "full", "lr": 1e-3, "scheduler": "constant",
            "best_val_loss": 1.0, "zero_shot_val_loss": 1.2, "stop_reason": "max_epochs"}
    (job / "metrics.json").write_text(json.dumps({**base, **metrics}))
    return job


def test_an_improvement_whose_interval_includes_zero_is_marked_not_significant(tmp_path: Path):
    make_job(tmp_path, "real", lr=1e-3, test={"mae": 0.8}, rel_improvement={"mae": 0.2},
             rel_improvement_ci={"mae": [0.1, 0.3]})
    make_job(tmp_path, "noise", lr=1e-4, test={"mae": 0.99}, rel_improvement={"mae": 0.01},
             rel_improvement_ci={"mae": [-0.02, 0.04]})
    report = analyze(tmp_path)
    sig = report.frame.set_index("lr")["significant.mae"]
    assert sig[1e-3] == True and sig[1e-4] == False  # noqa: E712 (numpy bools)
    shown = printable(report)
    cells = dict(zip(shown["lr"], shown["mae"]))
    assert "n.s." in cells[1e-4] and "n.s." not in cells[1e-3]
