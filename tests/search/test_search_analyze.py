"""analyze.py on constructed job directories: significance of improvements, pruned jobs, seed
aggregates and lr-finder suggestions (issue #13)."""

from __future__ import annotations

import json
from pathlib import Path

from moirai_ft.analysis.report import analyze, printable


def make_job(root: Path, name: str, config: dict | None = None, **metrics) -> Path:
    job = root / name
    job.mkdir(parents=True)
    base = {"status": "completed", "model": "tiny", "pattern": "full", "lr": 1e-3, "scheduler": "constant",
            "best_val_loss": 1.0, "zero_shot_val_loss": 1.2, "stop_reason": "max_epochs"}
    (job / "metrics.json").write_text(json.dumps({**base, **metrics}))
    if config is not None:  # what run_tracked writes: the resolved config behind the fingerprint
        (job / "fingerprint.json").write_text(json.dumps({"fingerprint": name, "config": config}))
    return job


def config(lr: float, seed: int, pattern: str = "full") -> dict:
    return {"model": {"name": "tiny"}, "pattern": {"name": pattern}, "lr": lr, "seed": seed,
            "eval": {"seed": seed, "num_samples": 4}, "sweep_root": "multirun"}


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


def test_analyze_renders_pruned_jobs_seed_aggregates_and_lr_finder_suggestions(tmp_path: Path):
    from moirai_ft.analysis.report import advice_lines

    for seed, mase in ((0, 1.0), (1, 1.2), (2, 1.4)):  # one configuration, three seeds
        make_job(tmp_path, f"lr=1e-3,seed={seed}", config(1e-3, seed), best_val_loss=0.5 + seed, test={"mase": mase})
    make_job(tmp_path, "lr=1e-4,seed=0", config(1e-4, 0), test={"mase": 2.0})  # a single seed: no aggregate
    make_job(tmp_path, "pruned", config(1e-9, 0), status="pruned", pruned_at_check=2,
             pruned_reason="worse_than_zero_shot", stop_reason="pruned", test={"mase": 3.0})
    make_job(tmp_path, "pruned_untested", config(1e-8, 0), status="pruned", pruned_at_check=1,
             pruned_reason="asha", stop_reason="pruned", test_skipped="pruned: not tested")
    make_job(tmp_path, "find_full", config(1e-5, 0), status="lr_find", lr_suggestion=3.2e-4,
             lr_sweep=[1.1e-4, 3.2e-4, 9.6e-4])
    make_job(tmp_path, "find_head", config(1e-5, 0, "head_only"), status="lr_find", pattern="head_only",
             lr_suggestion=2e-3, lr_sweep=[6.7e-4, 2e-3, 6e-3])
    report = analyze(tmp_path)
    states = dict(zip(report.frame["job"], report.frame["state"]))
    assert states["pruned"] == "pruned" and states["find_full"] == "lr_find"
    text = "\n".join(advice_lines(report))
    assert "pruned at check 2 (worse_than_zero_shot)" in text
    assert f"pruned at check 1 (asha); not tested: python -m moirai_ft.evaluate {tmp_path / 'pruned_untested'}" in text
    assert "model=tiny pattern=full: lr finder: suggestion 0.00032; sweep -m lr=0.00011,0.00032,0.00096" in text
    assert "model=tiny pattern=head_only: lr finder: suggestion 0.002" in text
    aggregate = [line for line in text.splitlines() if "(n=3, seeds 0,1,2)" in line]
    assert len(aggregate) == 1 and "lr=0.001" in aggregate[0]
    assert "test.mase 1.2 ± 0.2" in aggregate[0] and "best_val_loss 1.5 ± 1" in aggregate[0]
    assert "n=1" not in text and "n=2" not in text  # lr=1e-4 and the pruned lr=1e-9 ran one seed each


def test_jobs_rank_by_their_monitored_value(tmp_path: Path):
    make_job(tmp_path, "a", lr=1e-3, best_val_loss=0.5, monitor="val_crps", best_monitored=0.30)
    make_job(tmp_path, "b", lr=1e-4, best_val_loss=0.9, monitor="val_crps", best_monitored=0.20)
    assert [j.value("lr") for j in analyze(tmp_path).jobs] == [1e-3, 1e-4]  # by the NLL
    assert [j.value("lr") for j in analyze(tmp_path, "best_monitored").jobs] == [1e-4, 1e-3]
