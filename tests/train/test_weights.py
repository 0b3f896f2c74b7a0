"""Damaged weights are found, not used: a finished job's checkpoints/best cut short, overwritten, edited
or deleted after its metrics.json recorded their checksum. Re-evaluation refuses it in one line, analyze
neither ranks nor recommends it, a rerun of its sweep retrains it; `model.checkpoint=<job dir>` finds
checkpoints/best itself (and refuses damaged weights), also with a sweep job's name full of `=` and `,`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch
from hydra.errors import OverrideParseException
from hydra.types import RunMode

from conftest import compose_cfg
from moirai_ft.analysis.jobs import State
from moirai_ft.analysis.report import advice_lines, analyze
from moirai_ft.artifacts import HISTORY, METRICS
from moirai_ft.errors import UserError
from moirai_ft.evaluation.reevaluate import main as evaluate_main
from moirai_ft.model.load import load_module
from moirai_ft.sweep.runner import run_tracked
from moirai_ft.sweep.state import LINK, Action, fingerprint, plan_job
from moirai_ft.weights import CHECKSUM, best_dir, checksum, damage

EVAL_TINY = ["eval.num_samples=4", "eval.max_windows=8", "eval.plot_windows=0"]
NAME = "model=tiny,pattern=full,lr=0.001"  # a sweep job's directory name: `=` and `,` in it


def job_cfg(root: Path):
    return compose_cfg([*EVAL_TINY, f"sweep_root={root}"])


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One real job, run as a sweep job is (fingerprint, lock), whose directory the tests copy and damage."""
    root = tmp_path_factory.mktemp("multirun")
    job_dir = root / "2026-01-01" / "00-00-00" / NAME
    metrics = run_tracked(job_cfg(root), RunMode.MULTIRUN, job_dir, root, None)
    assert metrics["status"] == "completed", metrics
    return job_dir


@pytest.fixture
def copy(finished: Path, tmp_path: Path) -> Path:
    """The finished job in a sweep root of its own."""
    target = tmp_path / "multirun" / "2026-01-01" / "00-00-00" / NAME
    shutil.copytree(finished, target)
    return target


def _truncate(best: Path) -> None:
    f = best / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _overwrite(best: Path) -> None:  # same size, other bytes: a checksum, not a size check, finds it
    f = best / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-64:] = bytes(64)
    f.write_bytes(bytes(data))


def _edit_config(best: Path) -> None:
    f = best / "config.json"
    f.write_text(f.read_text().replace("{", "{\"edited\": 1, ", 1))


def _delete(best: Path) -> None:  # the weights file gone, the rest of checkpoints/best still there
    (best / "model.safetensors").unlink()


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": _truncate, "overwritten": _overwrite, "config_edited": _edit_config, "deleted": _delete,
}


def test_checksum_is_recorded_when_best_is_written(finished: Path) -> None:
    metrics = json.loads((finished / METRICS).read_text())
    assert metrics[CHECKSUM] == checksum(best_dir(finished)) and damage(finished) is None


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_damaged_weights_are_refused_everywhere(how: str, copy: Path, capsys) -> None:
    DAMAGE[how](best_dir(copy))
    assert damage(copy) is not None
    # re-evaluation: one line, exit 2, before the data or a model is loaded
    capsys.readouterr()
    assert evaluate_main([str(copy)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and ("damaged" in err[0] or "no selected weights" in err[0])
    # analyze: a row marked damaged, one diagnosis line, neither ranked best nor recommended
    report = analyze(copy.parents[2])
    (job,) = report.jobs
    assert job.state == State.damaged and not report.best
    lines = [line for line in advice_lines(report) if "DAMAGED" in line]
    assert len(lines) == 1 and "rerun the sweep" in lines[0]
    # the sweep's resume: not skipped as done
    fp, _ = fingerprint(job_cfg(copy.parents[2]))
    plan = plan_job(fp, copy.parents[2] / "2026-01-02" / "00-00-00" / NAME, copy.parents[2])
    assert plan.action != Action.skip_done and plan.target == copy


def test_rerun_of_the_sweep_retrains_damaged_weights(copy: Path) -> None:
    _truncate(best_dir(copy))
    root = copy.parents[2]
    rerun_dir = root / "2026-01-02" / "00-00-00" / NAME
    rerun_dir.mkdir(parents=True)  # as Hydra makes it
    metrics = run_tracked(job_cfg(root), RunMode.MULTIRUN, rerun_dir, root, None)
    assert metrics["status"] == "completed" and damage(copy) is None
    assert metrics[CHECKSUM] == checksum(best_dir(copy))
    assert json.loads((rerun_dir / LINK).read_text())["reason"] == "rerun"  # afresh, not from last.ckpt
    history = (copy / HISTORY).read_text().splitlines()
    assert history[1].startswith("-1,0,")  # the zero-shot check again: trained from the start


def test_truncated_safetensors_without_a_checksum_is_one_line(copy: Path, capsys) -> None:
    """An older job recorded no checksum: loading the cut file fails, and that is one line too."""
    metrics = json.loads((copy / METRICS).read_text())
    del metrics[CHECKSUM]
    (copy / METRICS).write_text(json.dumps(metrics))
    _truncate(best_dir(copy))
    capsys.readouterr()
    assert evaluate_main([str(copy)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not be loaded" in err[0] and "damaged" in err[0]


def test_model_checkpoint_takes_a_job_directory(finished: Path, copy: Path) -> None:
    # the override as the README writes it: the path quoted for Hydra (its name holds `=` and `,`)
    cfg = compose_cfg([f"model.checkpoint='{finished}'", "model.init=pretrained"])
    assert cfg.model.checkpoint == str(finished)
    module = load_module(cfg.model)
    from uni2ts.model.moirai import MoiraiModule

    best = MoiraiModule.from_pretrained(str(best_dir(finished)))
    for (name, a), (_, b) in zip(module.state_dict().items(), best.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(OverrideParseException):  # unquoted, Hydra splits it: hence the README's quotes
        compose_cfg([f"model.checkpoint={finished}", "model.init=pretrained"])
    _overwrite(best_dir(copy))
    with pytest.raises(UserError) as err:
        load_module(compose_cfg([f"model.checkpoint='{copy}'", "model.init=pretrained"]).model)
    assert "damaged" in str(err.value) and "\n" not in str(err.value)
