"""The tests' fork server (tests/forkserver.py): a forked train.py answers as a fresh one, and a server that
refuses to start (its imports printed or started a thread) leaves the suite to plain subprocesses, said once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TINY
from tests import forkserver


# as conftest.run_train runs train.py (one OpenMP thread: torch's pool would be threads the server refuses)
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_a_forked_train_py_answers_as_a_fresh_process(tmp_path: Path):
    env = ENV
    server = forkserver.ForkServer(env)
    try:
        assert server.usable()
        for args in (["--cfg", "job", *TINY, "lr=3e-3"], [*TINY, "lr=abc"]):  # a config, and a one-line refusal
            argv = [sys.executable, str(ROOT / "train.py"), *args]
            forked = server.run(argv, tmp_path, env, timeout=120)
            plain = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
            assert (forked.returncode, forked.stdout, forked.stderr) == (plain.returncode, plain.stdout, plain.stderr)
        assert forked.returncode == 2 and forked.stderr.startswith("error:")
    finally:
        server.stop()


def test_a_server_whose_imports_print_is_not_used_and_says_so_once(tmp_path: Path):
    (tmp_path / "sitecustomize.py").write_text("print('an import that prints')\n")  # runs in every interpreter
    env = {**ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    server = forkserver.ForkServer(env)
    try:
        with pytest.warns(UserWarning, match="the imports printed.*plain subprocesses"):
            assert not server.usable()
        assert not server.usable()  # decided once, no second warning (pytest's warning filters: an error)
    finally:
        server.stop()
