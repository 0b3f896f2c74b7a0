"""The metrics.json contract (moirai_ft/result.py) and the small helpers every module shares: one line of an
exception, a tolerant JSON read, an atomic write."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
from omegaconf import open_dict

from conftest import compose_cfg
from moirai_ft.artifacts import atomic_write, read_json, write_json_atomic
from moirai_ft.errors import UserError, first_line
from moirai_ft.model.load import load_module, random_module
from moirai_ft.result import FIELDS, TRAINED_FIELDS, UNSET, JobResult, Status


def test_every_field_says_what_it_means() -> None:
    for f in fields(JobResult):
        assert f.metadata["doc"].strip(), f.name
    assert TRAINED_FIELDS < FIELDS and {"status", "best_val_loss", "wall_s"} <= TRAINED_FIELDS


def test_a_record_holds_only_its_fields_and_refuses_undeclared_ones() -> None:
    identity = {"model": "tiny", "pattern": "full", "lr": 1e-3, "scheduler": "constant"}
    failed = JobResult.failed(identity, "lr must be > 0", "config").to_dict()
    assert failed == {**identity, "status": Status.failed.value, "error": "lr must be > 0", "error_type": "config"}
    assert JobResult.from_dict(failed).to_dict() == failed
    assert JobResult(status="completed", best_epoch=None).to_dict() == {"status": "completed", "best_epoch": None}
    assert JobResult().status is UNSET
    with pytest.raises(TypeError, match="not declared in moirai_ft/result.py"):
        JobResult.from_dict({**failed, "made_up": 1})


def test_first_line_of_any_message() -> None:
    assert first_line(ValueError("bad value\n  detail")) == "bad value"
    assert first_line(ValueError("\n\n  second\n")) == "second"
    assert first_line(AssertionError()) == ""  # no IndexError on an empty message
    assert first_line(ValueError("x" * 50), 10) == "x" * 10


def test_checkpoint_failing_with_an_empty_message_is_still_one_line(tmp_path: Path) -> None:
    """uni2ts asserts d_model's divisibility without a message: the error names the exception instead
    of hiding it behind an IndexError."""
    cfg = compose_cfg()
    random_module(cfg.model).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "d_model": config["d_model"] - 1}))
    with open_dict(cfg):
        cfg.model.init, cfg.model.checkpoint = "pretrained", str(tmp_path)
    with pytest.raises(UserError, match=r"could not be loaded \(AssertionError: \)") as e:
        load_module(cfg.model)
    assert "\n" not in str(e.value)


def test_json_read_is_tolerant_and_write_is_whole_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    assert read_json(path) is None  # missing
    path.write_text('{"status": "compl')  # cut short
    assert read_json(path) is None
    write_json_atomic(path, {"status": "completed", "best_val_loss": float("nan")})
    assert read_json(path) == {"status": "completed", "best_val_loss": None}  # JSON has no NaN
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write("half")
            raise RuntimeError("crashed mid-write")
    assert read_json(path) == {"status": "completed", "best_val_loss": None}  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temp file left behind
