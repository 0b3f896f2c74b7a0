"""The study a sweep's jobs share, on real storage: prune=asha across a SLURM job array with the journal file and
with PostgreSQL (prune.storage=postgresql://...), and two hydra/sweeper=optuna sweeps started at once on one
PostgreSQL study, sharing its trials as workers on two nodes would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from conftest import ROOT, TINY
from moirai_ft.search.study import JOURNAL, PRUNER_ATTR
from tests.sweep.test_slurm import QUICK, SMALL_JOBS, cluster_env, finish, start_train

pytestmark = pytest.mark.cluster


def load_study(storage: str | optuna.storages.BaseStorage, name: str | None = None) -> optuna.Study:
    if name is None:
        (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


@pytest.mark.parametrize("storage", ["journal", "postgresql"])
def test_asha_prunes_across_a_slurm_job_array(slurm_cluster, request, tmp_path: Path, storage: str):
    """Two jobs of one array, one at a time: the learning one (lr 3e-3) reaches ASHA's first rung first, so the
    flat one (lr 1e-9) is below the rung's best at its first check and is pruned there: a decision only the
    storage both jobs share can make."""
    args = ["-m", "hydra/launcher=slurm", *TINY, *QUICK, *SMALL_JOBS, "hydra.launcher.array_parallelism=1",
            "prune=asha", "lr=3e-3,1e-9", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    if storage == "postgresql":
        url = request.getfixturevalue("postgres_url")
        name = f"asha-{tmp_path.name}"
        args += [f"prune.storage={url}", f"prune.study_name={name}"]
    code, out = finish(start_train(args, tmp_path, cluster_env(slurm_cluster)))
    assert code == 0, out[-3000:]
    by_lr = {m["lr"]: m for m in (json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/metrics.json"))}
    assert by_lr[3e-3]["status"] == "completed", by_lr[3e-3]
    assert by_lr[1e-9]["status"] == "pruned" and by_lr[1e-9]["pruned_at_check"] == 1, by_lr[1e-9]
    if storage == "postgresql":
        study = load_study(url, name)
    else:
        from optuna.storages.journal import JournalFileBackend

        study = load_study(optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "multirun" / JOURNAL))))
    assert sorted(t.state.name for t in study.get_trials()) == ["COMPLETE", "PRUNED"]


def test_two_optuna_sweeps_at_once_share_one_postgresql_study(postgres_url: str, tmp_path: Path):
    """n_trials=1 each, same storage and study name, started together: 2 trials (the sum, not the 1 either
    asks for), each asked and run once, one by each sweep, with the same pruner; a third sweep that would prune
    differently is refused in one line."""
    name = f"shared-{tmp_path.name}"
    args = ["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=1", *TINY, *QUICK, "prune=asha",
            f"prune.storage={postgres_url}", f"prune.study_name={name}",
            "lr=tag(log,interval(1e-4,1e-2))", "pattern=choice(full,head_only)"]
    env = cluster_env()
    sweeps = [start_train([*args, f"hydra.sweep.dir={tmp_path / w / 'sweep'}"], tmp_path / w, env) for w in ("a", "b")]
    for proc in sweeps:
        code, out = finish(proc)
        assert code == 0, out[-3000:]

    study = load_study(postgres_url, name)
    trials = study.get_trials()
    assert len(trials) == 2 and {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert len({t.user_attrs["sweep"] for t in trials}) == 2  # one trial asked by each sweep
    ran = [json.loads((tmp_path / w / "sweep" / "optuna_trials.json").read_text()) for w in ("a", "b")]
    numbers = [n for r in ran for n in r.values()]
    assert sorted(numbers) == sorted(t.number for t in trials)  # every trial ran once, in one sweep
    assert len(list(tmp_path.glob("*/sweep/*/metrics.json"))) == 2
    assert all(sorted(t.intermediate_values) == [1, 2] or t.state.name == "PRUNED" for t in trials)
    assert study.user_attrs[PRUNER_ATTR] == "asha(min_resource=1, reduction_factor=3)"

    other = subprocess.run([sys.executable, str(ROOT / "train.py"), *[a.replace("prune=asha", "prune=median") for a in args],
                            f"hydra.sweep.dir={tmp_path / 'c' / 'sweep'}"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)
    assert other.returncode == 2, other.stderr[-3000:]
    lines = other.stderr.strip().splitlines()
    assert len(lines) == 1 and "prune=asha(" in lines[0] and "prune.study_name" in lines[0], other.stderr
    assert len(load_study(postgres_url, name).get_trials()) == 2
