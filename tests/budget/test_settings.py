"""plan= and budget= as settings: durations read as a user writes them, a bad one is one line naming budget=
(exit 2, before anything runs, for a single run and a sweep alike), and neither changes what identifies a
job (its fingerprint, directory name, Optuna study), so a larger budget continues the same sweep."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CONF, compose_cfg, run_train
from moirai_ft.budget.duration import format_duration, parse_duration
from moirai_ft.config.precheck import check_command_line
from moirai_ft.errors import UserError
from moirai_ft.search.study import study_name_for
from moirai_ft.sweep.naming import dirname
from moirai_ft.sweep.state import fingerprint


@pytest.mark.parametrize("text,seconds", [("2h", 7200), ("45min", 2700), ("90s", 90), ("1h30min", 5400),
                                          ("1.5h", 5400), ("2 d", 172800), ("10m", 600), ("0.5min", 30)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["90", "abc", "2q", "0s", "h", "2h-1", ""])
def test_a_bad_duration_is_one_line_naming_budget(text: str) -> None:
    with pytest.raises(UserError) as err:
        parse_duration(text)
    assert str(err.value).startswith(f"budget={text}") and "\n" not in str(err.value) and "budget=2h" in str(err.value)


def test_durations_print_at_every_scale() -> None:
    assert [format_duration(s) for s in (4.25, 42, 210, 7500)] == ["4.2 s", "42 s", "3.5 min", "2 h 05 min"]


@pytest.mark.parametrize("args,expected", [
    (["budget=2q"], "budget=2q: unknown unit"),
    (["-m", "budget=45", "lr=1e-5,2e-5"], "budget=45 has no unit"),  # a sweep too, before any job
    (["-m", "budget=1h,2h", "lr=1e-5,2e-5"], "budget is one setting for the whole sweep"),
    (["plan=maybe"], "plan must be true or false"),
])
def test_the_command_line_check_names_the_setting(args: list[str], expected: str) -> None:
    assert expected in (check_command_line(args, CONF) or "")


def test_a_bad_budget_exits_2_with_one_line_and_no_directory(tmp_path: Path) -> None:
    proc = run_train(["-m", "budget=soon", "lr=1e-5,2e-5"], tmp_path)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "budget=soon" in errors[0], proc.stderr[-2000:]
    assert not any(tmp_path.iterdir())


def test_plan_and_budget_leave_a_job_s_identity_alone() -> None:
    plain, budgeted = compose_cfg([]), compose_cfg(["plan=true", "budget=2h"])
    assert fingerprint(plain)[0] == fingerprint(budgeted)[0]
    assert dirname("tiny", "full", 1e-3, ["budget=2h", "plan=true"], None) == dirname("tiny", "full", 1e-3, [], None)
    assert study_name_for(["lr=1e-5,2e-5", "budget=1h"]) == study_name_for(["lr=1e-5,2e-5", "budget=3h"])
