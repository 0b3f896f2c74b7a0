"""Opt-in pytest plugin: CPU seconds per test, the test process's and its waited-for children's (train.py,
analyze.py; train.py runs forked by tests/forkserver.py count too). Wall-clock lies on a shared machine;
CPU time does not. Use:

    MOIRAI_FT_CPU_COST=cost.tsv python -m pytest -p cpu_cost ...

appends `nodeid<TAB>phase<TAB>self_s<TAB>children_s` per phase (setup includes the fixtures built for it)."""

from __future__ import annotations

import os
import resource
import sys

import pytest

_OUT = os.environ.get("MOIRAI_FT_CPU_COST")


def _cpu() -> tuple[float, float]:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    # train.py runs forked by tests/forkserver.py are its children, not ours: it reports their CPU time
    forked = getattr(sys.modules.get("tests.forkserver"), "CPU_S", 0.0)
    return s.ru_utime + s.ru_stime, c.ru_utime + c.ru_stime + forked


def _measured(phase: str):
    @pytest.hookimpl(hookwrapper=True)
    def hook(item, *args):
        s0, c0 = _cpu()
        yield
        s1, c1 = _cpu()
        if _OUT:
            with open(_OUT, "a") as f:
                f.write(f"{item.nodeid}\t{phase}\t{s1 - s0:.2f}\t{c1 - c0:.2f}\n")
    return hook


pytest_runtest_setup = _measured("setup")
pytest_runtest_call = _measured("call")
pytest_runtest_teardown = _measured("teardown")
