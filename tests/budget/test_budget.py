"""plan=true and budget= on real sweeps (issue #24): the plan trains nothing and prints one line per job and a
total; a grid whose plan does not fit its budget starts its jobs in order while it lasts and records the rest
as `not started: budget`; the same command with a larger budget trains them in their directories without
retraining the others; the optuna sweeper starts no trial that cannot finish in the budget.

No wall-clock assert: the jobs the budget leaves out are planned at 600,000 steps (hours on any machine), and
really stop at their first check (prune.zero_shot_checks=1 with an lr too small to move a weight), so the
budget's decisions do not depend on this machine's speed, and the rerun that trains them is quick."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

from conftest import CONF, TINY, compose_cfg, run_train
from moirai_ft.analysis.jobs import State, read_job
from moirai_ft.analysis.report import analyze
from moirai_ft.budget.cli import before_hydra
from moirai_ft.budget.clock import BUDGET, PLAN
from moirai_ft.budget.plan import JobPlan, SweepPlan, check_steps, expected_fraction
from moirai_ft.budget.plan_text import fitting
from moirai_ft.result import TRAINED_FIELDS
from moirai_ft.search import study as studies
from moirai_ft.sweep.state import LINK, read_fingerprint, read_link

NOT_STARTED = "not started: budget"  # the contract's status text
QUICK = [*[o for o in TINY if not o.startswith(("lr=", "eval.max_windows"))], "eval.num_samples=4", "eval.max_windows=8",
         "eval.plot_windows=0", "val_check_interval=2", "prune.zero_shot_checks=1", "hardware.progress_bar_refresh=0"]
GRID = ["-m", *QUICK, "epochs=1,100000", "lr=1e-12,2e-12"]  # jobs 0, 1: 6 steps; jobs 2, 3: planned 600,000


def job_dirs(sweep: Path) -> list[Path]:
    """The sweep's job directories in hydra.job.num order."""
    return sorted((p for p in sweep.iterdir() if (p / ".hydra").is_dir()),
                  key=lambda p: int((p / ".hydra" / "hydra.yaml").read_text().split("num: ", 1)[1].split()[0]))


def snapshot(dirs: list[Path]) -> dict[str, tuple[int, str]]:
    files = [p for d in dirs for p in [d / "metrics.json", *sorted((d / "checkpoints").rglob("*"))] if p.is_file()]
    return {str(p): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest()) for p in files}


def test_plan_true_trains_nothing_and_prints_each_job_and_a_total(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = before_hydra(["-m", *QUICK, "plan=true", "epochs=1", "monitor=val_crps", "lr=1e-3,2e-3,3e-3"], CONF, tmp_path)
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    for lr in ("0.001", "0.002", "0.003"):  # one line per job, named as its directory will be
        (line,) = [x for x in out if f"lr={lr}" in x]
        assert "steps 6 (1 x 6)" in line and "checks 3" in line and "est." in line, line
    assert any(x.startswith("total: 3 jobs, 18 steps, 9 checks: est.") for x in out), out
    assert list(tmp_path.iterdir()) == []  # no directory, no metrics.json: the calibration's was temporary


def test_a_single_job_over_its_budget_is_refused_before_it_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = before_hydra([*QUICK, "epochs=100000", "budget=10min"], CONF, tmp_path)  # planned at 600,000 steps
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "budget=10min" in errors[0], errors
    assert list(tmp_path.iterdir()) == []


def test_the_plan_counts_checks_as_the_trainer_runs_them():
    cfg = compose_cfg(["epochs=2"])
    for interval, steps in ((2, [2, 4, 6, 8, 10, 12]), (5, [5, 10, 12]), (100, [12]), (1.0, [6, 12]), (0.7, [4, 10, 12])):
        cfg.val_check_interval = interval
        assert check_steps(cfg, 6, 12) == steps, interval


def test_the_total_follows_the_launcher_s_batches_and_the_budget_takes_jobs_in_order():
    jobs = [JobPlan(i, f"job{i}", [], "f", estimate_s=10.0 * (i + 1)) for i in range(3)]
    one_by_one = SweepPlan("grid", jobs, [], 5.0, False, 1, None, "none", 0.0)  # the basic launcher: start-up once
    assert one_by_one.batch_ends() == [15.0, 35.0, 65.0] and fitting(one_by_one, 34.0) == 1
    two_at_once = SweepPlan("grid", jobs, [], 5.0, True, 2, None, "none", 0.0)  # a process each, batches of 2
    assert two_at_once.batch_ends() == [15.0, 25.0, 60.0] and two_at_once.total() == 60.0
    assert fitting(two_at_once, 30.0) == 2 and fitting(two_at_once, 60.0) == 3


def test_the_plan_prices_a_pruner_by_its_class_whatever_its_file_is_called():
    """The range's low end follows the conf/prune file's `pruner` entry: a file of another name with the same
    Optuna class prices as the shipped one, from its own arguments; a class the plan cannot price, as none."""
    from omegaconf import OmegaConf

    asha = compose_cfg(["prune=asha"]).prune
    shares, rungs = zip(*expected_fraction(asha, 9))
    assert rungs == (1, 3, 9) and shares == pytest.approx((2 / 3, 2 / 9, 1 / 9))
    renamed = OmegaConf.create({"name": "halving4", "pruner": {
        "_target_": "optuna.pruners.SuccessiveHalvingPruner", "min_resource": 2, "reduction_factor": 4}})
    assert expected_fraction(renamed, 9) == [(0.75, 2), (0.1875, 8), (0.0625, 9)]  # rungs 2, 8
    percentile = OmegaConf.create({"name": "p25", "pruner": {
        "_target_": "optuna.pruners.PercentilePruner", "percentile": 25.0, "n_warmup_steps": 1}})
    assert expected_fraction(percentile, 9) == [(0.75, 2), (0.25, 9)]
    assert expected_fraction(compose_cfg(["prune=median"]).prune, 9) == [(0.5, 1), (0.5, 9)]
    unknown = OmegaConf.create({"name": "asha", "pruner": {"_target_": "my.pruners.Oracle"}})
    assert expected_fraction(unknown, 9) == [(1.0, 9)] == expected_fraction(compose_cfg(["prune=none"]).prune, 9)


@dataclass
class Budgeted:
    first: Path  # the sweep with budget=10min
    second: Path  # the same command with budget=1000h
    outputs: list[str]
    records: dict[str, dict]  # each job's metrics.json after the first run, by directory name
    after_first: dict[str, tuple[int, str]]
    after_second: dict[str, tuple[int, str]]


def budgeted_runs(cwd: Path) -> Budgeted:
    runs = [run_train([*GRID, "budget=10min"], cwd)]
    (first,) = (cwd / "multirun").glob("*/*")
    records = {d.name: json.loads((d / "metrics.json").read_text()) for d in job_dirs(first)}
    after_first = snapshot(job_dirs(first))
    runs.append(run_train([*GRID, "budget=1000h"], cwd))
    for proc in runs:
        assert proc.returncode == 0, proc.stderr[-3000:]
    (second,) = set((cwd / "multirun").glob("*/*")) - {first}
    return Budgeted(first, second, [p.stdout for p in runs], records, after_first, snapshot(job_dirs(first)))


def test_a_grid_over_budget_leaves_the_rest_out_and_a_larger_budget_trains_them(tmp_path):
    """One test, not three on one module fixture: pytest-xdist would run the two sweeps once per worker."""
    budgeted = budgeted_runs(tmp_path)
    leaves_the_rest_out(budgeted)
    trains_the_rest_in_place(budgeted)
    analyze_reads_a_job_left_out_as_not_started(budgeted, tmp_path / "copy")


def leaves_the_rest_out(budgeted: Budgeted) -> None:
    """The grid starts in its order while the budget lasts; the rest are recorded, not trained."""
    dirs = job_dirs(budgeted.first)
    plan = json.loads((budgeted.first / PLAN).read_text())
    assert [j["total_steps"] for j in plan["jobs"]] == [6, 6, 600_000, 600_000]
    assert [budgeted.records[d.name]["status"] for d in dirs] == ["pruned", "pruned", NOT_STARTED, NOT_STARTED]
    summary = budgeted.outputs[0]
    assert "2 not started: budget" in summary and "budget=10min: spent" in summary
    for num, d in enumerate(dirs[2:], start=2):
        assert f"{NOT_STARTED} {d.name}" in summary
        assert read_fingerprint(d) == plan["jobs"][num]["fingerprint"]  # a rerun finds it as a twin
        record = budgeted.records[d.name]  # no result: none of a trained job's fields
        assert not (TRAINED_FIELDS - {"status", "model", "pattern", "lr", "scheduler"}) & set(record), record
        assert record["planned_s"] > 0 and record["budget_left_s"] <= 600
    budget = json.loads((budgeted.first / BUDGET).read_text())
    assert budget["budget_s"] == 600 and budget["not_started"] == [d.name for d in dirs[2:]]


def trains_the_rest_in_place(budgeted: Budgeted) -> None:
    """The same command with a larger budget trains them where they are; the others are not retrained."""
    dirs = job_dirs(budgeted.first)
    done_first = {k: v for k, v in budgeted.after_first.items() if any(k.startswith(str(d) + "/") for d in dirs[:2])}
    assert done_first and all(budgeted.after_second[k] == v for k, v in done_first.items())  # not retrained
    for d in dirs[2:]:  # trained now, in the first sweep's directory (one directory per configuration)
        metrics = json.loads((d / "metrics.json").read_text())
        assert metrics["status"] == "pruned" and metrics["steps_run"] == 2, metrics
    links = {p.name: read_link(p) for p in job_dirs(budgeted.second)}
    assert all(links[d.name] == d.resolve() for d in dirs) and all((p / LINK).is_file() for p in job_dirs(budgeted.second))
    assert "not started" not in budgeted.outputs[1].split("sweep ", 1)[-1]
    report = analyze(budgeted.first.parent.parent)
    assert all(j.state == State.pruned for j in report.jobs) and len(report.jobs) == 4
    (left,) = [b for b in report.budgets if b.sweep_dir == budgeted.first]
    assert left.left_out == [d.name for d in dirs[2:]] and left.trained_since == left.left_out


def analyze_reads_a_job_left_out_as_not_started(budgeted: Budgeted, where: Path) -> None:
    name = job_dirs(budgeted.first)[2].name
    job_dir = where / name
    job_dir.mkdir(parents=True)
    (job_dir / "metrics.json").write_text(json.dumps(budgeted.records[name]))
    job = read_job(job_dir)
    assert job.state == State.not_started and "larger budget=" in job.note


def test_the_optuna_sweeper_starts_no_trial_that_cannot_finish(tmp_path):
    proc = run_train(["-m", *QUICK, "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3", "epochs=choice(100000)",
                      "lr=tag(log,interval(1e-12,1e-11))", "budget=10min"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{NOT_STARTED}: trial 0" in proc.stdout
    assert not list(tmp_path.rglob("metrics.json")) and not list(tmp_path.rglob("checkpoints"))
    (sweep,) = (tmp_path / "multirun").glob("*/*")
    left_out = json.loads((sweep / BUDGET).read_text())["left_out"]
    assert [t["trial"] for t in left_out] == [0] and left_out[0]["planned_s"] > 600
    storage = studies.storage_for(None, tmp_path / "multirun", tmp_path)
    (summary,) = optuna.get_all_study_summaries(storage)
    (trial,) = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    assert trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs["not_started"] == NOT_STARTED
