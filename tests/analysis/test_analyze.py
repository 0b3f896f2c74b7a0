"""analyze.py on a sweep that went wrong (a failing job, a diverging one), on job directories that are
running, unfinished or cut short, and the section 7 diagnosis rules on constructed histories."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT, TINY, run_train
from moirai_ft.analysis.diagnose import Rule, Thresholds, apply_overrides, diagnose, is_flat, is_oscillating
from moirai_ft.sweep.state import JobLock

EVAL_TINY = ["eval.num_samples=4", "eval.max_windows=8", "eval.plot_windows=0"]
# one intra-op thread per job process: with the other tests' processes on the same 2 cores, torch's
# default (a thread per core, spinning while it waits) makes a tiny sweep about 3x slower
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
# the failing job first (lr must be > 0), so the next runs after a failure; 1e30 makes the weights NaN
TROUBLE = ["-m", *TINY, *EVAL_TINY, "lr=-1,1e30"]


@dataclass
class Cli:
    returncode: int
    stdout: str
    stderr: str


def analyze_cli(capsys, path: Path, out: Path, *extra: str) -> Cli:
    """analyze.py's main in this process (tests/sweep/test_sweep.py runs it as a subprocess)."""
    spec = importlib.util.spec_from_file_location("analyze_cli", ROOT / "analyze.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    capsys.readouterr()
    code = module.main([str(path), "--out", str(out), *extra])
    captured = capsys.readouterr()
    return Cli(code, captured.out, captured.err)


@dataclass
class Trouble:
    run: subprocess.CompletedProcess
    sweep: Path
    by_lr: dict[float, Path]  # job directory per lr


@pytest.fixture(scope="module")
def trouble(tmp_path_factory) -> Trouble:
    cwd = tmp_path_factory.mktemp("trouble")
    run = run_train(TROUBLE, cwd, env=ONE_THREAD)
    sweep = next((cwd / "multirun").glob("*/*"))
    by_lr = {json.loads((d / "metrics.json").read_text())["lr"]: d for d in sweep.iterdir() if (d / "metrics.json").is_file()}
    return Trouble(run, sweep, by_lr)


def metrics(job_dir: Path) -> dict:
    return json.loads((job_dir / "metrics.json").read_text())


def test_a_failing_job_does_not_stop_the_sweep_but_its_exit_status_says_so(trouble: Trouble):
    assert trouble.run.returncode != 0
    assert {lr: metrics(d)["status"] for lr, d in trouble.by_lr.items()} == {-1: "failed", 1e30: "diverged"}
    out = trouble.run.stdout + trouble.run.stderr
    assert f"FAILED {trouble.by_lr[-1].name}: {metrics(trouble.by_lr[-1])['error']}" in out


def test_analyze_lists_the_failure_with_its_error_and_the_diverged_job(trouble: Trouble, tmp_path: Path, capsys):
    out = analyze_cli(capsys, trouble.sweep, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"FAILED: {metrics(trouble.by_lr[-1])['error']}" in out.stdout
    jobs = {j["metrics"]["lr"]: j for j in json.loads((tmp_path / "summary.json").read_text())["jobs"]}
    assert (jobs[-1]["state"], jobs[1e30]["state"]) == ("failed", "diverged")
    diverged = jobs[1e30]["diagnosis"]
    assert [d["rule"] for d in diverged][:1] == ["diverged"] and "lr=5e+29" in diverged[0]["next"][0]
    assert [j["state"] for j in json.loads((tmp_path / "summary.json").read_text())["jobs"]][-1] == "failed"


def test_analyze_reports_running_unfinished_and_truncated_jobs_and_prints_the_rest(trouble: Trouble, tmp_path: Path, capsys):
    root = tmp_path / "multirun"
    shutil.copytree(trouble.sweep, root / "s", ignore=shutil.ignore_patterns("checkpoints", "logs"))
    good = root / "s" / trouble.by_lr[1e30].name  # diverged: a finished job with a result
    for name in ("running", "unfinished", "truncated"):
        shutil.copytree(good, root / name)
    (root / "running" / "metrics.json").unlink()
    history = (root / "running" / "training_history.csv").read_text()
    (root / "running" / "training_history.csv").write_text(history + "0,6,2.1")  # a row being written
    (root / "unfinished" / "metrics.json").unlink()
    text = (root / "truncated" / "metrics.json").read_text()
    (root / "truncated" / "metrics.json").write_text(text[: len(text) // 2])  # a writer killed mid-file
    with JobLock(root / "running"):  # flock: analyze's probe opens its own file description and sees it held
        out = analyze_cli(capsys, root, tmp_path / "out")
    assert out.returncode == 0, out.stderr[-3000:]
    states = {j["job"]: j["state"] for j in json.loads((tmp_path / "out" / "summary.json").read_text())["jobs"]}
    assert {states[k] for k in ("running", "unfinished", "truncated")} == {"running", "unfinished", "unreadable"}
    assert states["running"] == "running" and states["truncated"] == "unreadable"
    assert sorted(v for k, v in states.items() if k.startswith("s/")) == ["diverged", "failed"]
    assert "UNREADABLE: metrics.json unreadable" in out.stdout and "RUNNING" in out.stdout
    assert good.name in out.stdout  # the readable jobs still printed (by name: unique below the root)


def test_an_unknown_metric_is_one_line_naming_the_allowed_ones(trouble: Trouble, tmp_path: Path, capsys):
    out = analyze_cli(capsys, trouble.sweep, tmp_path, "--metric", "test.nope")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "best_val_loss" in out.stderr and "test." in out.stderr


# ---------------------------------------------------------------------------------------------------
# the rules, on constructed histories: each fires on its symptom and stays quiet on a healthy job

CONFIG = {"lr": 1e-5, "warmup_steps": 100, "epochs": 10, "patience": 3, "val_check_interval": 1.0,
          "pattern": {"name": "freeze_ffn"}}
HEALTHY_METRICS = {"status": "completed", "stop_reason": "max_epochs", "best_epoch": 9, "finetune_helped": True,
                   "steps_run": 1000, "epochs_run": 10.0, "rel_improvement": {"mase": 0.08, "wql": 0.1}}
HEALTHY = [1.00, 0.95, 0.91, 0.88, 0.86, 0.85, 0.845]  # zero-shot first, falling, then levelling
ZIGZAG = [1.00, 0.90, 0.97, 0.86, 0.95, 0.84, 0.93]
FLAT = [1.00, 1.0004, 0.9998, 1.0003, 0.9996]
OVERFIT = [1.00, 0.90, 0.88, 0.90, 0.93, 0.96]  # one turn: overfitting, not oscillation


def rules(losses, metrics=HEALTHY_METRICS, config=CONFIG) -> dict[Rule, list[dict[str, str]]]:
    return {f.rule: f.alternatives for f in diagnose(losses, metrics, config)}


def test_a_healthy_job_fires_no_rule():
    assert rules(HEALTHY) == {}
    assert not is_oscillating(OVERFIT) and not is_flat(OVERFIT)


def test_oscillating_halves_lr_and_doubles_warmup():
    assert is_oscillating(ZIGZAG) and not is_oscillating(HEALTHY)
    (alt,) = rules(ZIGZAG)[Rule.oscillating]
    assert float(alt["lr"]) == pytest.approx(CONFIG["lr"] / 2) and int(alt["warmup_steps"]) == 2 * CONFIG["warmup_steps"]


def test_flat_doubles_lr_or_unfreezes_one_step():
    assert is_flat(FLAT) and not is_flat(HEALTHY)
    found = rules(FLAT)
    assert set(found) == {Rule.flat}  # not also "worse than zero-shot": nothing moved at all
    lr_alt, pattern_alt = found[Rule.flat]
    assert float(lr_alt["lr"]) == pytest.approx(2 * CONFIG["lr"]) and pattern_alt == {"pattern": "full"}
    assert rules(FLAT, config={**CONFIG, "pattern": {"name": "full"}})[Rule.flat] == [{"lr": lr_alt["lr"]}]


def test_stopping_with_the_best_in_epoch_0_or_1_asks_for_patience_or_more_checks():
    for best_epoch in (0, 1):
        stopped = {**HEALTHY_METRICS, "stop_reason": "early_stopping", "best_epoch": best_epoch}
        patience, more_checks = rules(HEALTHY, stopped)[Rule.stopped_early]
        assert int(patience["patience"]) > CONFIG["patience"]
        assert float(more_checks["val_check_interval"]) < CONFIG["val_check_interval"]
    assert Rule.stopped_early not in rules(HEALTHY, {**HEALTHY_METRICS, "stop_reason": "early_stopping", "best_epoch": 4})


def test_worse_than_zero_shot_lowers_lr_or_epochs():
    no_check_beat = {**HEALTHY_METRICS, "finetune_helped": False, "best_epoch": -1}
    lower_lr, fewer_epochs = rules(HEALTHY, no_check_beat)[Rule.worse_than_zero_shot]
    assert float(lower_lr["lr"]) < CONFIG["lr"] and int(fewer_epochs["epochs"]) < CONFIG["epochs"]
    worse_on_test = {**HEALTHY_METRICS, "rel_improvement": {"mase": -0.04, "wql": -0.02, "mse_norm": 0.01}}
    assert Rule.worse_than_zero_shot in rules(HEALTHY, worse_on_test)
    one_of_three = {**HEALTHY_METRICS, "rel_improvement": {"mase": -0.01, "wql": 0.05, "mse_norm": 0.03}}
    assert Rule.worse_than_zero_shot not in rules(HEALTHY, one_of_three)


def test_thresholds_are_relative_to_the_loss_scale():
    # the same zigzag on a loss around -3 (NLL can be negative) and scaled by 3 is still oscillating
    assert is_oscillating([3 * v - 6 for v in ZIGZAG]) and not is_oscillating([3 * v - 6 for v in HEALTHY])
    assert not is_flat(FLAT, Thresholds(flat=0.0001))


def test_next_overrides_replace_the_jobs_own_and_drop_the_preset():
    job = ["sweep=small_stage", "experiment=small_head_lr5e5", "+data.path=x.csv", "lr=1e-4"]
    assert apply_overrides(job, {"lr": "5e-05", "warmup_steps": "200"}) == [
        "experiment=small_head_lr5e5", "+data.path=x.csv", "lr=5e-05", "warmup_steps=200"]


def test_a_job_whose_test_evaluation_failed_shows_no_test_result(tmp_path: Path, capsys, monkeypatch):
    """Trained, then the test evaluation raised: metrics.json keeps the training result and test_error, and
    analyze says the job has no test result (not a plain `completed`), and how to get one."""
    from conftest import compose_cfg
    from moirai_ft.evaluation import compare
    from moirai_ft.train.job import run

    def fails(*_a, **_k):
        raise RuntimeError("Shape mismatch, 14 != 2")

    monkeypatch.setattr(compare, "forecast_quantiles", fails)
    job = tmp_path / "sweep" / "0"
    result = run(compose_cfg([*EVAL_TINY, "steps_per_epoch=2", "val_max_windows=8"]), job)
    assert result["status"] == "completed" and "test" not in result
    assert result["test_error"] == "RuntimeError: Shape mismatch, 14 != 2"
    out = analyze_cli(capsys, tmp_path / "sweep", tmp_path / "out")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "no test result: the test evaluation failed (RuntimeError: Shape mismatch, 14 != 2" in out.stdout
    assert f"python -m moirai_ft.evaluate {job}" in out.stdout
    (row,) = json.loads((tmp_path / "out" / "summary.json").read_text())["jobs"]
    assert row["note"].startswith("no test result")
