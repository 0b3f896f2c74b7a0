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
    shown = {line.split()[1]: line for line in printable(analyze(tmp_path, "test.mae")).splitlines()[1:]}
    assert "+1.0% n.s." in shown["noise"] and "+20.0%" in shown["real"] and "n.s." not in shown["real"]


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
    # by default what monitor= selected on and the sweeper minimised; the NLL when asked
    assert [j.value("lr") for j in analyze(tmp_path).jobs] == [1e-4, 1e-3]
    assert [j.value("lr") for j in analyze(tmp_path, "best_val_loss").jobs] == [1e-3, 1e-4]


def test_a_gain_within_noise_is_diagnosed_not_significant_never_healthy(tmp_path: Path):
    """The ranking metric's test counterpart (val_mae -> mae) decides: an interval that includes 0 is
    `not_significant`, with the next runs that would settle it; a real gain stays healthy."""
    from moirai_ft.analysis.report import advice_lines

    cfg = {**config(1e-3, 0), "epochs": 2, "eval": {"seed": 0, "max_windows": 32}}
    common = dict(monitor="val_mae", best_monitored=0.9, zero_shot_monitored=1.0, finetune_helped=True,
                  test_eval={"windows": 32}, steps_run=20, best_step=20, stop_reason="max_epochs")
    make_job(tmp_path, "noise", cfg, **common, rel_improvement={"mae": 0.01, "wql": 0.2},
             rel_improvement_ci={"mae": [-0.02, 0.04], "wql": [0.1, 0.3]})
    make_job(tmp_path, "real", {**cfg, "lr": 1e-4}, **common, lr=1e-4, rel_improvement={"mae": 0.2, "wql": -0.01},
             rel_improvement_ci={"mae": [0.1, 0.3], "wql": [-0.05, 0.03]})
    report = analyze(tmp_path)
    jobs = {j.path.name: j for j in report.jobs}
    assert [f.rule.value for f in jobs["noise"].findings] == ["not_significant"]
    assert jobs["real"].findings == []  # wql is n.s. there, but mae judges a val_mae sweep
    text = "\n".join(advice_lines(report))
    noise = text[text.index("lr=0.001: "):]
    assert "healthy" not in noise.splitlines()[0] and "gain within noise" in noise
    assert "[-2.0%, +4.0%] includes 0 over 32 test windows" in noise
    nexts = [line.strip().removeprefix("next: ") for line in noise.splitlines()[1:4]]
    # every test window (a re-evaluation: eval.max_windows capped them), a longer run (still improving), seeds
    assert nexts[0].startswith("python -m moirai_ft.evaluate ") and nexts[0].endswith("eval.max_windows=null")
    assert nexts[1].startswith("python train.py ") and "epochs=4" in nexts[1]
    assert nexts[2].startswith("python train.py -m ") and "seed=0,1,2" in nexts[2]


def test_the_terminal_table_of_a_12_job_sweep_fits_120_columns(tmp_path: Path, capsys):
    """Long sweep names (a job directory holds its overrides), every state, n.s. marks: no line wraps."""
    import importlib.util

    from conftest import ROOT

    sweep = tmp_path / "multirun" / "2026-12-02" / "14-17-46"
    for i in range(12):
        name = (f"model=moirai2_small,pattern={('freeze_ffn', 'head_only', 'lora')[i % 3]},lr={10 ** -(4 + i % 4):g},"
                f"scheduler=cosine,warmup_steps=0.1,seed={i}")
        status = ("completed", "diverged", "failed", "pruned")[i % 4] if i > 7 else "completed"
        make_job(sweep, name, config(1e-3, i), status=status, monitor="val_crps", best_monitored=0.1234567 * (i + 1),
                 zero_shot_monitored=1.0, wall_s=12345.6 + i, test={"mae": 1.0, "wql": 0.5, "mase": 2.0},
                 rel_improvement={"mae": 0.1, "wql": -0.12345}, rel_improvement_ci={"wql": [-0.3, 0.1]},
                 error="x" * 300 if status == "failed" else None)
    spec = importlib.util.spec_from_file_location("analyze_cli", ROOT / "analyze.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([str(tmp_path / "multirun")]) == 0
    table = capsys.readouterr().out.split("\n\n")[0].splitlines()
    assert len(table) == 13  # header and 12 jobs, one line each
    assert max(map(len, table)) <= 120, max(table, key=len)
    assert table[0].split() == ["#", "job", "state", "val_crps", "vs", "zero-shot", "test", "wql", "wall"]
    assert "-12.3% n.s." in table[1] and "+87.7%" in table[1] and "12346s" in table[1]
    # names cut at the front: their ends, which tell the jobs apart, stay
    assert sorted(line.split()[1].rsplit("seed=", 1)[1] for line in table[1:]) == sorted(map(str, range(12)))
    # the rest (every test metric, errors, the full job path) is in the summary files
    frame = (tmp_path / "multirun" / "summary.csv").read_text()
    assert "test.mase" in frame and "x" * 300 in frame
