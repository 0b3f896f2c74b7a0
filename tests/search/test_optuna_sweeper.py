"""hydra/sweeper=optuna (hydra_plugins/moirai_optuna_sweeper): trials from a mixed search space, a rerun
that continues the study without retraining, crashes recorded, pruning in the same study."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import TINY, run_train
from hydra_plugins.moirai_optuna_sweeper.space import distribution
from moirai_ft.search.study import JOURNAL

EVAL_TINY = ["eval.num_samples=4", "eval.max_windows=8", "eval.plot_windows=0"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
SPACE = ["lr=tag(log,interval(1e-4,1e-2))", "pattern=choice(full,head_only)"]


def the_study(cwd: Path) -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(cwd / "multirun" / JOURNAL)))
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def results(cwd: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (cwd / "multirun").rglob("metrics.json")]


def test_the_search_space_is_hydras_sweep_syntax():
    parsed = {o.key_or_group: distribution(o) for o in OverridesParser.create().parse_overrides(
        [*SPACE, "epochs=tag(int,interval(1,5))", "seed=0,1,2", "batch_size=range(16,48,16)"])}
    assert parsed["lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    assert parsed["pattern"] == optuna.distributions.CategoricalDistribution(["full", "head_only"])
    assert parsed["epochs"] == optuna.distributions.IntDistribution(1, 5)
    assert parsed["seed"].choices == (0, 1, 2) and parsed["batch_size"].choices == (16, 32)


def test_a_sampler_is_one_target_entry():
    """sampler=<name> builds the `_target_` entry of that name; another of Optuna's samplers is one more entry
    (here Quasi-Monte Carlo), with no code; a grid gets the search space, an interval it refuses in one line."""
    from hydra.errors import HydraException

    from hydra_plugins.moirai_optuna_sweeper.config import SAMPLERS
    from hydra_plugins.moirai_optuna_sweeper.space import make_sampler

    space = {"lr": optuna.distributions.CategoricalDistribution([1e-4, 1e-3])}
    assert isinstance(make_sampler("tpe", 0, space), optuna.samplers.TPESampler)
    assert isinstance(make_sampler("grid", 0, space), optuna.samplers.GridSampler)
    samplers = {**SAMPLERS, "qmc": {"_target_": "optuna.samplers.QMCSampler"}}
    assert isinstance(make_sampler("qmc", 0, space, samplers), optuna.samplers.QMCSampler)
    with pytest.raises(HydraException, match="choose one of tpe, random, grid"):
        make_sampler("qmc", 0, space)
    with pytest.raises(HydraException, match="lr is an interval"):
        make_sampler("grid", 0, {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2)})


def test_a_finite_space_ends_the_search_once_every_point_is_evaluated():
    """n_trials larger than a choice space: once every point has a completed or pruned trial, the sweeper
    stops asking (the rest would be repeats, each a skipped job); a failed trial or an interval does not count."""
    from hydra_plugins.moirai_optuna_sweeper.space import evaluated, exhausted, size

    D = optuna.distributions
    space = {"pattern": D.CategoricalDistribution(["full", "head_only"]), "lr": D.CategoricalDistribution([1e-4, 1e-3])}
    assert size(space) == 4 and size({**space, "x": D.FloatDistribution(0, 1)}) is None
    study = optuna.create_study()
    points = [("full", 1e-4), ("full", 1e-3), ("head_only", 1e-4), ("full", 1e-4)]  # a repeat
    for pattern, lr in points:
        study.add_trial(optuna.trial.create_trial(params={"pattern": pattern, "lr": lr}, distributions=space, value=1.0))
    study.add_trial(optuna.trial.create_trial(params={"pattern": "head_only", "lr": 1e-3}, distributions=space,
                                              state=optuna.trial.TrialState.FAIL))
    assert len(evaluated(study, space)) == 3 and not exhausted(study, space)
    study.add_trial(optuna.trial.create_trial(params={"pattern": "head_only", "lr": 1e-3}, distributions=space,
                                              state=optuna.trial.TrialState.PRUNED, intermediate_values={1: 2.0}))
    assert exhausted(study, space)
    assert not exhausted(study, {**space, "x": D.FloatDistribution(0, 1)})


def test_trials_from_a_mixed_space_and_a_rerun_continues_the_study(tmp_path: Path):
    args = ["-m", "hydra/sweeper=optuna", "hydra.sweeper.seed=0", *TINY, *EVAL_TINY, "val_check_interval=3",
            "prune=median", *SPACE]
    first = run_train([*args, "hydra.sweeper.n_trials=2"], tmp_path, env=ONE_THREAD)
    assert first.returncode == 0, first.stderr[-3000:]
    study = the_study(tmp_path)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    done = {(m["pattern"], m["lr"]): m for m in results(tmp_path)}
    for t in trials:
        assert 1e-4 <= t.params["lr"] <= 1e-2 and t.params["pattern"] in ("full", "head_only")
        job = done[(t.params["pattern"], t.params["lr"])]  # each trial is a readable job
        assert job["status"] == "completed" and t.value == pytest.approx(job["best_monitored"])
        assert sorted(t.intermediate_values) == [1, 2]  # the job reported each check to the shared study
    assert "best value" in first.stdout

    second = run_train([*args, "hydra.sweeper.n_trials=3"], tmp_path, env=ONE_THREAD)  # the same command, one more trial
    assert second.returncode == 0, second.stderr[-3000:]
    assert len(the_study(tmp_path).get_trials()) == 3
    assert len(results(tmp_path)) == 3  # one new job; the two completed ones were not retrained


def test_a_crashing_trial_is_recorded_and_the_study_goes_on(tmp_path: Path):
    # warmup longer than the run: that trial's job fails; the grid has two points and both run
    args = ["-m", "hydra/sweeper=optuna", "hydra.sweeper.sampler=grid", "hydra.sweeper.n_trials=2", *TINY,
            *EVAL_TINY, "warmup_steps=choice(0,1000)"]
    proc = run_train(args, tmp_path, env=ONE_THREAD)
    assert proc.returncode == 1, proc.stderr[-3000:]  # a sweep with a failed job says so in its exit status
    by_state = {t.state.name: t for t in the_study(tmp_path).get_trials()}
    assert set(by_state) == {"COMPLETE", "FAIL"}
    assert by_state["FAIL"].params["warmup_steps"] == 1000 and by_state["COMPLETE"].params["warmup_steps"] == 0
    assert "error" in by_state["FAIL"].user_attrs
    assert sorted(m["status"] for m in results(tmp_path)) == ["completed", "failed"]
