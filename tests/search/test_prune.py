"""prune=none|asha|hyperband|median and prune.zero_shot_checks (moirai_ft/search/prune.py): jobs stop on
Optuna's pruners across a sweep, a pruned job is a kept result, and the worse-than-zero-shot rule."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from conftest import TINY, run_train
from moirai_ft.search.prune import WORSE_THAN_ZERO_SHOT, Pruning
from tests.search.test_monitor import select

EVAL_TINY = ["eval.num_samples=4", "eval.plot_windows=0"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("losses, pruned_at", [
    ([1.0, 1.1, 1.05, 1.2, 1.3], 2),  # still above zero-shot at check 2: pruned there
    ([1.0, 0.9, 0.85, 0.8, 0.78], None),  # healthy: never
    ([1.0, 1.1, 0.95, 0.9, 0.85], None),  # above at check 1, below by check 2: the rule waits for check 2
])
def test_worse_than_zero_shot_rule(tmp_path: Path, losses: list[float], pruned_at: int | None):
    rule = Pruning(trial=None, zero_shot_checks=2, pruner_name="none")
    best = select(tmp_path, "val/loss", nll=losses, crps=losses, patience=10, more=[rule])
    assert rule.pruned_at == pruned_at
    if pruned_at is not None:
        assert rule.reason == WORSE_THAN_ZERO_SHOT
        assert best.checks == 1 + pruned_at  # the fit stopped at the check that decided


def test_pruning_follows_the_monitor(tmp_path: Path):
    # the NLL falls, the monitored CRPS rises above its zero-shot value: pruned on val_crps, not on val_nll
    nll, crps = [1.0, 0.9, 0.8, 0.7], [0.5, 0.6, 0.7, 0.8]
    on_crps, on_nll = Pruning(None, 2, "none"), Pruning(None, 2, "none")
    select(tmp_path, "val/crps", nll=nll, crps=crps, patience=10, more=[on_crps])
    select(tmp_path, "val/loss", nll=nll, crps=crps, patience=10, more=[on_nll])
    assert on_crps.pruned_at == 2 and on_nll.pruned_at is None


def seeded_study(path: Path, name: str) -> None:
    """Two finished trials far better than any real job at every check: the median rule prunes at check 1."""
    from optuna.storages.journal import JournalFileBackend

    study = optuna.create_study(storage=optuna.storages.JournalStorage(JournalFileBackend(str(path))),
                                study_name=name, direction="minimize")
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(
            value=-1e9, intermediate_values={step: -1e9 for step in range(1, 50)}, state=optuna.trial.TrialState.COMPLETE,
            distributions={}, params={}))


@pytest.mark.slow  # a sweep and its rerun
def test_a_pruned_job_keeps_its_best_weights_is_tested_and_a_rerun_skips_it(tmp_path: Path):
    journal = tmp_path / "study.log"
    seeded_study(journal, "seeded")
    args = ["-m", *TINY, *EVAL_TINY, "epochs=3", "val_check_interval=2", "prune=median",
            f"prune.storage={journal}", "prune.study_name=seeded", "prune.eval_max_windows=8"]
    first = run_train(args, tmp_path, env=ONE_THREAD)
    assert first.returncode == 0, first.stderr[-3000:]
    job = next((tmp_path / "multirun").rglob("metrics.json")).parent
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["status"] == "pruned" and metrics["pruned_at_check"] == 1 and metrics["pruned_reason"] == "median"
    assert metrics["stop_reason"] == "pruned" and metrics["steps_run"] == 2  # one check of 2 steps, of 3 x 6
    assert (job / "checkpoints" / "best" / "model.safetensors").is_file()
    assert metrics["test"] and metrics["test_eval"]["windows"] <= 8  # evaluated, on the cheaper test
    # the study knows: the job's trial is pruned, with its report at check 1
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="seeded", storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal))))
    mine = study.get_trials()[-1]
    assert mine.state == optuna.trial.TrialState.PRUNED and list(mine.intermediate_values) == [1]
    assert mine.intermediate_values[1] == pytest.approx(metrics["best_monitored"])

    second = run_train(args, tmp_path, env=ONE_THREAD)  # a rerun: the pruned job is a result, skipped
    assert second.returncode == 0, second.stderr[-3000:]
    assert "1 pruned" in second.stdout and "skipped" in second.stdout
    assert len(study.get_trials()) == 3  # no new trial: nothing ran
    assert json.loads((job / "metrics.json").read_text()) == metrics


@pytest.mark.slow
def test_the_pruner_decides_across_processes_under_the_local_launcher(tmp_path: Path):
    """4 jobs, 2 at a time, each in its own submitit process, one study in the default journal file: the
    two learning jobs run together and finish; the two flat ones (lr 1e-9) are pruned at their first check
    by the median of the others, which only the shared storage shows them."""
    import os

    from conftest import ROOT
    from moirai_ft.evaluation.reevaluate import reevaluate
    from moirai_ft.evaluation.zero_shot import SHARED_DIR
    from moirai_ft.search.study import JOURNAL
    from moirai_ft.sweep.once import computations

    sweep = tmp_path / "sweep"
    env = {**ONE_THREAD, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = run_train(["-m", "hydra/launcher=local", "hydra.sweeper.max_batch_size=2", *TINY, *EVAL_TINY,
                      "eval.max_windows=8", "val_check_interval=3", "prune=median",
                      "lr=3e-3,2e-3,1e-9,2e-9", f"hydra.sweep.dir={sweep}"], tmp_path, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    by_lr = {m["lr"]: m for m in (json.loads(p.read_text()) for p in sweep.glob("*/metrics.json"))}
    assert {by_lr[lr]["status"] for lr in (3e-3, 2e-3)} == {"completed"}
    for lr in (1e-9, 2e-9):
        assert by_lr[lr]["status"] == "pruned" and by_lr[lr]["pruned_at_check"] == 1, by_lr[lr]
        # not tested (prune.eval_max_windows=0, the default), and says how to test it
        assert "test" not in by_lr[lr] and "python -m moirai_ft.evaluate" in by_lr[lr]["test_skipped"]
    # the four jobs, two at a time in their own processes, validated the zero-shot model once, and the
    # two that were tested forecast its test windows once (moirai_ft/evaluation/zero_shot.py)
    done = sorted(c["name"].split("-")[0] for c in computations(sweep / SHARED_DIR))
    assert done == ["test", "validation"]
    pruned = next(p.parent for p in sweep.glob("*/metrics.json") if json.loads(p.read_text())["lr"] == 1e-9)
    again = reevaluate(pruned)  # the user's way to a pruned job's test metrics
    assert again["test"] and "test_skipped" not in json.loads((pruned / "metrics.json").read_text())
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*.err"))
    assert "Traceback" not in logs and "StorageInternalError" not in logs
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "multirun" / JOURNAL)))
    (name,) = optuna.get_all_study_names(storage)
    states = sorted(t.state.name for t in optuna.load_study(study_name=name, storage=storage).get_trials())
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"]


@pytest.mark.parametrize("prune", ["asha", "median", "hyperband"])
def test_optunas_pruner_stops_a_job_worse_than_the_study_on_the_monitored_value(tmp_path: Path, prune: str):
    """Six finished jobs at 0.1 at every check; this one's monitored CRPS stays near 0.4: ASHA (first rung
    at check 1) and the median rule prune it at check 1, Hyperband at its bracket's first rung."""
    from conftest import compose_cfg
    from moirai_ft.search.prune import JobTrial, build_pruner

    # a fixed name: Hyperband puts a trial in a bracket by a hash of the study's name and the trial's number
    study = optuna.create_study(direction="minimize", pruner=build_pruner(compose_cfg([f"prune={prune}"]).prune),
                                study_name="constructed")
    for _ in range(6):  # enough finished jobs for each of Hyperband's brackets to hold some
        study.add_trial(optuna.trial.create_trial(
            value=0.1, intermediate_values={s: 0.1 for s in range(1, 6)}, state=optuna.trial.TrialState.COMPLETE,
            system_attrs={f"completed_rung_{r}": 0.1 for r in range(3)}, distributions={}, params={}))
    trial = study.ask()
    rule = Pruning(JobTrial(study, trial, owned_by_sweeper=False), None, prune)
    crps = [0.5, 0.45, 0.42, 0.41, 0.40, 0.40]
    select(tmp_path, "val/crps", nll=[1.0, 0.5, 0.4, 0.3, 0.2, 0.1], crps=crps, patience=10, more=[rule])
    assert rule.reason == prune and rule.pruned_at is not None
    if prune != "hyperband":
        assert rule.pruned_at == 1
    reported = study.get_trials()[-1].intermediate_values
    assert reported[1] == pytest.approx(0.45)  # the monitored value (best so far), not the NLL


def test_a_crashed_grid_job_marks_its_trial_failed(tmp_path: Path):
    """A job that raises after asking its trial (here: out of memory below the floor) tells the study FAIL;
    left RUNNING, the pruners would wait on it and the study would count a job still to report."""
    from optuna.storages.journal import JournalFileBackend

    from conftest import compose_cfg
    from moirai_ft.instrument.faults import InjectFaults
    from moirai_ft.train.job import run

    journal = tmp_path / "study.log"
    cfg = compose_cfg(["prune=median", f"prune.storage={journal}", "prune.study_name=crash", "oom_min_batch_size=8"])
    metrics = run(cfg, tmp_path / "job", {"faults": InjectFaults(oom_above=1)})
    assert metrics["status"] == "failed"
    study = optuna.load_study(study_name="crash",
                              storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal))))
    (trial,) = study.get_trials(deepcopy=False)
    assert trial.state == optuna.trial.TrialState.FAIL
    assert "out of GPU memory" in trial.user_attrs["error"]


def test_a_pruner_added_by_one_conf_file_stops_a_bad_job(tmp_path: Path):
    """A pruner moirai-ft does not ship (Optuna's PercentilePruner), added as one conf/prune file in a
    directory of the test's own: no code. It prunes a job worse than the study as the shipped ones do."""
    from hydra import compose, initialize_config_dir

    from conftest import CONF
    from moirai_ft.search.prune import JobTrial, build_pruner

    (tmp_path / "conf" / "prune").mkdir(parents=True)
    (tmp_path / "conf" / "prune" / "percentile.yaml").write_text(
        "defaults:\n  - /schema/prune@_here_\n  - _self_\nname: percentile\n"
        "pruner:\n  _target_: optuna.pruners.PercentilePruner\n  percentile: 25.0\n  n_startup_trials: 2\n")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=TINY + [f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                                                             "prune=percentile"])
    pruner = build_pruner(cfg.prune)
    assert isinstance(pruner, optuna.pruners.PercentilePruner)
    study = optuna.create_study(direction="minimize", pruner=pruner)
    for _ in range(3):
        study.add_trial(optuna.trial.create_trial(
            value=0.1, intermediate_values={s: 0.1 for s in range(1, 6)}, state=optuna.trial.TrialState.COMPLETE,
            distributions={}, params={}))
    rule = Pruning(JobTrial(study, study.ask(), owned_by_sweeper=False), None, cfg.prune.name)
    select(tmp_path, "val/crps", nll=[1.0, 0.5, 0.4, 0.3], crps=[0.5, 0.45, 0.42, 0.41], patience=10, more=[rule])
    assert rule.reason == "percentile" and rule.pruned_at == 1


def test_a_study_database_that_cannot_be_opened_is_one_line_naming_prune_storage(tmp_path: Path):
    """No server at prune.storage's address: one `error:` line, exit 2, the password hidden, before training."""
    import socket

    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://someone:hunter2@127.0.0.1:{port}/studies"
    proc = run_train([*TINY, "prune=asha", f"prune.storage={url}"], cwd=tmp_path, env=ONE_THREAD)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"error: prune.storage=postgresql://someone:***@127.0.0.1:{port}/studies cannot be opened")
    assert "hunter2" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("training_history.csv"))  # nothing trained
