"""Real `python train.py -m` sweeps: readable job directories, a rerun that retrains nothing, a rerun
that redoes only the job whose result was lost, and analyze.py over the result."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.types import RunMode
from omegaconf import OmegaConf

from conftest import CONF, ROOT, TINY, compose_cfg, run_train
from moirai_ft.artifacts import HISTORY
from moirai_ft.config.saved import load_job_config
from moirai_ft.evaluation.reevaluate import reevaluate
from moirai_ft.evaluation.zero_shot import SHARED_DIR
from moirai_ft.sweep.once import computations
from moirai_ft.train.job import run
from moirai_ft.sweep.runner import run_tracked
from moirai_ft.sweep.state import (
    FINGERPRINT, LINK, Action, JobLock, earlier_fingerprint, fingerprint, plan_job, read_link,
)

# the job's test evaluation shrunk like the training: a few windows, a few samples, no picture
EVAL_TINY = ["eval.num_samples=4", "eval.max_windows=8", "eval.plot_windows=0"]
# one intra-op thread per job process: with the other tests' processes on the same 2 cores, torch's
# default (a thread per core, spinning while it waits) makes a tiny sweep about 3x slower
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
PATTERNS = {"small_head_lr5e5": "head_only", "small_full_lr5e6": "full"}  # two patterns, via the seed's experiments
LRS = (1e-3, 3e-3)
# blend and calibration: the zero-shot model's validation forecast is shared too (a third entry)
SWEEP = ["-m", *TINY, *EVAL_TINY, f"experiment={','.join(PATTERNS)}", "lr=" + ",".join(map(str, LRS)),
         "blend=true", "calibrate=conformal"]


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())


def snapshot(dirs: list[Path]) -> dict[str, tuple[int, str]]:
    """(mtime, content hash) of every metrics.json and checkpoint file: what a retrain would touch."""
    files = [p for d in dirs for p in [d / "metrics.json", *sorted((d / "checkpoints").rglob("*"))] if p.is_file()]
    return {str(p): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest()) for p in files}


@dataclass
class Grid:
    cwd: Path
    runs: list[subprocess.CompletedProcess]
    sweeps: list[Path]  # multirun/<date>/<time> of each run
    before: dict[str, tuple[int, str]]  # after the first run
    after_rerun: dict[str, tuple[int, str]]  # after the identical second run
    victim: Path  # the job whose metrics.json was deleted before the third run
    after_redo: dict[str, tuple[int, str]]


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Grid:
    cwd = tmp_path_factory.mktemp("grid")
    runs = [run_train(SWEEP, cwd, env=ONE_THREAD)]
    first = next((cwd / "multirun").glob("*/*"))
    before = snapshot(job_dirs(first))
    runs.append(run_train(SWEEP, cwd, env=ONE_THREAD))
    after_rerun = snapshot(job_dirs(first))
    victim = job_dirs(first)[0]
    (victim / "metrics.json").unlink()
    runs.append(run_train(SWEEP, cwd, env=ONE_THREAD))
    sweeps = sorted((cwd / "multirun").glob("*/*"))
    return Grid(cwd, runs, sweeps, before, after_rerun, victim, snapshot(job_dirs(first)))


def name_fields(job_dir: Path) -> dict[str, str]:
    return dict(part.split("=", 1) for part in job_dir.name.split(","))


def test_grid_lands_in_four_readable_directories(grid: Grid):
    assert grid.runs[0].returncode == 0, grid.runs[0].stderr[-3000:]
    dirs = job_dirs(grid.sweeps[0])
    seen = set()
    for d in dirs:
        fields = name_fields(d)
        # the name is the job: model, pattern, lr first, then what else the sweep varies, nothing more
        assert list(fields)[:3] == ["model", "pattern", "lr"] and set(fields) == {"model", "pattern", "lr", "experiment"}
        cfg = OmegaConf.load(d / ".hydra" / "config.yaml")
        assert (fields["model"], fields["pattern"], float(fields["lr"])) == (cfg.model.name, cfg.pattern.name, cfg.lr)
        assert PATTERNS[fields["experiment"]] == fields["pattern"]
        metrics = json.loads((d / "metrics.json").read_text())
        assert (metrics["status"], metrics["pattern"], metrics["lr"]) == ("completed", fields["pattern"], float(fields["lr"]))
        assert (d / FINGERPRINT).is_file() and (d / "checkpoints" / "last.ckpt").is_file()
        seen.add((fields["pattern"], float(fields["lr"])))
    assert seen == set(product(PATTERNS.values(), LRS))


def test_rerun_retrains_nothing_and_says_what_it_skipped(grid: Grid):
    second = grid.runs[1]
    assert second.returncode == 0, second.stderr[-3000:]
    assert grid.after_rerun == grid.before  # no metrics.json, no checkpoint written again
    out = second.stdout + second.stderr
    assert out.count("skipped: completed earlier") == 4
    originals = {d.resolve() for d in job_dirs(grid.sweeps[0])}
    for d in job_dirs(grid.sweeps[1]):
        assert read_link(d) in originals and read_link(d).name == d.name
        assert not (d / "metrics.json").exists() and not (d / "checkpoints").exists()


def test_lost_metrics_redoes_only_that_job_from_its_checkpoint(grid: Grid):
    third = grid.runs[2]
    assert third.returncode == 0, third.stderr[-3000:]
    changed = {k for k in grid.after_redo if grid.after_redo.get(k) != grid.before.get(k)}
    assert changed and all(k.startswith(str(grid.victim)) for k in changed)
    assert json.loads((grid.victim / "metrics.json").read_text())["status"] == "completed"
    out = third.stdout + third.stderr
    assert out.count("skipped: completed earlier") == 3
    link = json.loads((grid.sweeps[2] / grid.victim.name / LINK).read_text())
    assert link["reason"] == "continued from its last checkpoint"
    # the closing summary calls it what it was: continued, not skipped
    assert f"continued {grid.victim.name}: completed" in third.stdout
    assert f"skipped {grid.victim.name}" not in third.stdout


def test_analyze_summary_equals_each_jobs_metrics_and_draws_both_plots(grid: Grid, tmp_path: Path):
    out = subprocess.run([sys.executable, str(ROOT / "analyze.py"), str(grid.cwd / "multirun"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    originals = job_dirs(grid.sweeps[0])
    # three sweeps point at the same four results: each counted once
    assert sorted(Path(grid.cwd / "multirun" / j["job"]).resolve() for j in summary["jobs"]) == [d.resolve() for d in originals]
    table = pd.read_csv(tmp_path / "summary.csv")
    for job in summary["jobs"]:
        metrics = json.loads((grid.cwd / "multirun" / job["job"] / "metrics.json").read_text())
        assert job["metrics"] == metrics
        row = table[table["job"] == job["job"]].iloc[0]
        for key in ("best_val_loss", "zero_shot_val_loss", "lr", "wall_s"):
            assert row[key] == pytest.approx(metrics[key])
        for name, value in (metrics.get("test") or {}).items():
            assert row[f"test.{name}"] == pytest.approx(value)
        assert (row["pattern"], row["state"]) == (metrics["pattern"], metrics["status"])
    values = [j["metrics"]["best_val_loss"] for j in summary["jobs"]]
    assert values == sorted(values)  # best first
    md = (tmp_path / "summary.md").read_text()
    assert all(j["job"] in md for j in summary["jobs"])
    for png in ("learning_curves.png", "lr_pattern_heatmap.png"):
        data = (tmp_path / "plots" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_analyze_prints_the_base_stage_command_from_the_finished_small_stage(grid: Grid, tmp_path: Path):
    out = subprocess.run([sys.executable, str(ROOT / "analyze.py"), str(grid.sweeps[0]), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    command = summary["base_stage_command"]
    assert command and command in out.stdout
    words = command.split()
    assert words[:3] == ["python", "train.py", "-m"]
    experiments = words[3].removeprefix("experiment=").split(",")
    carried = words[4:]
    best_pattern = summary["jobs"][0]["metrics"]["pattern"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        first = compose(config_name="train", overrides=[f"experiment={experiments[0]}", *carried])
        others = [compose(config_name="train", overrides=[f"experiment={e}"]) for e in experiments]
    assert sorted(experiments) == sorted(p.stem for p in (CONF / "experiment").glob("base_*.yaml"))
    assert {c.model.name for c in others} == {"base"}
    assert first.pattern.name == best_pattern  # the pattern that won on small goes first
    assert first.data.num_columns == 3  # the small stage's data settings carried over
    assert "model=tiny" not in carried and not any(w.startswith("lr=") for w in carried)


# what differs between a job alone and the same job in a sweep: how long it took
TIMINGS = ("wall_s", "train_samples_per_s")


def without_timings(metrics: dict) -> dict:
    out = {k: v for k, v in metrics.items() if k not in TIMINGS}
    out["test_eval"] = {k: v for k, v in metrics["test_eval"].items() if k != "wall_s"}
    return out


def test_the_grid_evaluates_its_zero_shot_model_once(grid: Grid):
    """Four jobs (two patterns x two lrs, then a rerun and a job continued from its checkpoint) share one
    starting model, data, windows and evaluation settings: one zero-shot validation, one zero-shot test, and
    (blend=true, calibrate=conformal) one zero-shot forecast of the validation windows."""
    done = computations(grid.sweeps[0] / SHARED_DIR)
    assert sorted(c["name"].split("-")[0] for c in done) == ["test", "validation", "validation_forecast"], done
    # the rerun skipped every job; the third run continued one from its checkpoint: validated already, and
    # its test evaluation computed the zero-shot part once more in that sweep (each sweep its own entries)
    assert computations(grid.sweeps[1] / SHARED_DIR) == []
    assert sorted(c["name"].split("-")[0] for c in computations(grid.sweeps[2] / SHARED_DIR)) == [
        "test", "validation_forecast"]
    first = job_dirs(grid.sweeps[0])
    assert {c["by"] for c in done} <= {str(d) for d in first}
    zero_shot = {json.dumps(json.loads((d / "metrics.json").read_text())["zero_shot_test"]) for d in first}
    assert len(zero_shot) == 1


def test_a_sweep_job_writes_what_it_would_alone_and_another_eval_setting_is_not_shared(grid: Grid, tmp_path: Path):
    computed_by = {c["by"] for c in computations(grid.sweeps[0] / SHARED_DIR)}
    reader = next(d for d in job_dirs(grid.sweeps[0]) if str(d) not in computed_by)  # read both entries
    cfg = load_job_config(reader)
    alone = run(cfg, tmp_path / "alone")  # no sweep: evaluates its zero-shot model itself
    assert without_timings(alone) == without_timings(json.loads((reader / "metrics.json").read_text()))
    assert (tmp_path / "alone" / HISTORY).read_text() == (reader / HISTORY).read_text()

    # the sweep's entries, copied: a job with other evaluation settings computes its own
    root = tmp_path / "sweep_root"
    shutil.copytree(grid.sweeps[0] / SHARED_DIR, root / SHARED_DIR)
    other = copy.deepcopy(cfg)
    other.eval.num_samples = cfg.eval.num_samples + 1
    run(other, tmp_path / "other_eval", shared_root=root)
    names = [c["name"] for c in computations(root / SHARED_DIR)]
    assert len(names) == 6 and len(set(names)) == 6  # a validation, a test and a validation forecast of its own

    # re-evaluation of a job that read the shared entries reproduces its test metrics alone
    shutil.copytree(reader, tmp_path / "reevaluated")
    again = reevaluate(tmp_path / "reevaluated")
    stored = json.loads((reader / "metrics.json").read_text())
    for key in ("test", "zero_shot_test", "rel_improvement"):
        assert again[key] == pytest.approx(stored[key]), key
    for name, interval in stored["rel_improvement_ci"].items():
        assert again["rel_improvement_ci"][name] == pytest.approx(interval), name


def test_plan_skips_a_twin_another_process_is_running(tmp_path: Path):
    cfg = compose_cfg()
    fp, config = fingerprint(cfg)
    twin = tmp_path / "multirun" / "d" / "t" / "job"
    twin.mkdir(parents=True)
    (twin / FINGERPRINT).write_text(json.dumps({"fingerprint": fp, "config": config}))
    mine = tmp_path / "multirun" / "d" / "t2" / "job"
    mine.mkdir(parents=True)
    assert plan_job(fp, mine, tmp_path / "multirun").action == Action.continue_twin  # unfinished, nobody on it
    with JobLock(twin):
        assert plan_job(fp, mine, tmp_path / "multirun").action == Action.skip_running
    assert plan_job("another", mine, tmp_path / "multirun").action == Action.run_here


@pytest.mark.parametrize("pattern", ["full", "lora"])
def test_a_job_fingerprinted_before_patterns_declared_what_they_train_is_still_its_twin(pattern: str, tmp_path: Path):
    fp, config = fingerprint(compose_cfg([f"pattern={pattern}"]))
    # fingerprint.json as a job wrote it then: its pattern node held the name (and lora's settings) only
    then = {**config, "pattern": {k: v for k, v in config["pattern"].items() if k not in ("train", "freeze", "adapter")}}
    assert then["pattern"]["name"] == pattern and len(then["pattern"]) < len(config["pattern"])
    old = hashlib.sha256(json.dumps(then, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert old != fp and earlier_fingerprint(config) == old
    twin = tmp_path / "multirun" / "d" / "t" / "job"
    twin.mkdir(parents=True)
    (twin / FINGERPRINT).write_text(json.dumps({"fingerprint": old, "config": then}))
    mine = tmp_path / "multirun" / "d" / "t2" / "job"
    mine.mkdir(parents=True)
    assert plan_job(fp, mine, tmp_path / "multirun", earlier_fingerprint(config)).action == Action.continue_twin
    assert plan_job(fp, mine, tmp_path / "multirun").action == Action.run_here


def test_a_sweep_preset_without_multirun_is_refused(tmp_path: Path):
    cfg = compose_cfg(["sweep=small_stage"])
    metrics = run_tracked(cfg, RunMode.RUN, tmp_path, tmp_path, "small_stage")
    assert metrics["status"] == "failed" and "python train.py -m sweep=small_stage" in metrics["error"]
    assert json.loads((tmp_path / "metrics.json").read_text())["error"] == metrics["error"]
    assert not (tmp_path / "checkpoints").exists()  # refused before any training


@pytest.mark.slow  # three sweeps
def test_a_sweep_over_another_configs_jobs_fails_them_and_keeps_their_results(tmp_path: Path):
    """Same hydra.sweep.dir, same swept values, another fixed setting: the job directories are taken."""
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, "epochs=0", "lr=1e-3,1e-2", f"hydra.sweep.dir={sweep}"]
    first = run_train(args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    jobs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    before = [json.loads((j / "metrics.json").read_text()) for j in jobs]
    second = run_train([*args, "seed=7"], cwd=tmp_path)
    assert second.returncode == 1
    assert "2 failed" in second.stdout and "give this sweep its own hydra.sweep.dir" in second.stdout
    assert [json.loads((j / "metrics.json").read_text()) for j in jobs] == before
    # the exit status came from the file the SweepStatus callback wrote, which the sweep directory keeps
    status = json.loads((sweep / "sweep_status.json").read_text())
    assert status["exit_code"] == 1 and status["counts"] == {"failed": 2} and len(status["failed"]) == 2
    third = run_train(args, cwd=tmp_path)  # the original config again: its jobs, done, skipped, all well
    assert third.returncode == 0, third.stdout[-2000:]
    assert json.loads((sweep / "sweep_status.json").read_text())["exit_code"] == 0
    assert not list(sweep.glob("*/refused.json"))
