"""The README's "Your own data" example trains with its one command: a wide CSV with a timestamp column,
dropouts, missing rows and a text column (the command is read from the README, shrunk with TINY)."""

from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path

from conftest import ROOT, TINY, run_train
from moirai_ft.artifacts import HISTORY, METRICS


def readme_example() -> tuple[list[str], list[str]]:
    """(generator arguments, train.py arguments) from the README's "## Your own data" section."""
    section = (ROOT / "README.md").read_text().split("## Your own data", 1)[1]
    lines = [line.strip() for line in section.splitlines()]
    make = next(line for line in lines if line.startswith("python examples/make_building_csv.py"))
    train = next(line for line in lines if line.startswith("python train.py"))
    return shlex.split(make)[2:], shlex.split(train)[2:]


def test_readme_example_trains_with_one_command(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_building_csv", ROOT / "examples" / "make_building_csv.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    make_args, train_args = readme_example()
    csv = generator.write_building_csv(tmp_path / make_args[0])
    assert "status" in csv.read_text().splitlines()[0]

    # the test evaluation at the end of the job is not what this shows: keep it to a few windows
    proc = run_train(
        train_args + TINY + ["steps_per_epoch=2", "val_max_windows=16", "eval.max_windows=16", "eval.num_samples=8"],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (job_dir,) = {p.parent for p in tmp_path.rglob(METRICS)}
    assert json.loads((job_dir / METRICS).read_text())["status"] == "completed"
    assert (job_dir / HISTORY).is_file()
    norm = json.loads((job_dir / "normalization.json").read_text())
    assert "status" not in norm["columns"] and len(norm["columns"]) == 8
    assert any("reindexed" in note for note in norm["notes"])
