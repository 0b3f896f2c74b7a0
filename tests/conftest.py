"""Shared test helpers: compose the real Hydra config, shrink it to a tiny CPU job, run train.py."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from moirai_ft.config.store import register
from tests import forkserver, xdist_groups

register()  # the schemas conf/ composes against (moirai_ft/config/store.py)

# tiny models gain nothing from intra-op threads, and the suite's subprocesses share the 2 cores
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# A job that trains a random tiny Moirai on a few synthetic columns in seconds on one CPU core.
TINY = [
    "model=tiny",
    "hardware=cpu",
    "data.num_columns=3",
    "data.num_days=30",
    "context_length=64",
    "prediction_length=16",
    "patch_size=16",
    "batch_size=16",
    "steps_per_epoch=6",
    "epochs=1",
    "warmup_steps=0",
    "val_max_windows=64",
    "eval.max_windows=32",  # every job ends with a test evaluation of two models: keep it small
    "lr=1e-3",
    # the cheapest monitor (no sampled forecasts at every check); the default, val_crps, runs in the README's
    # main job (tests/train/test_console.py) and in the monitor tests (tests/search/test_monitor.py)
    "monitor=val_nll",
]


def compose_cfg(overrides: list[str] | None = None, tiny: bool = True) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=(TINY if tiny else []) + list(overrides or []))


def shrink(cfg: DictConfig, **values) -> DictConfig:
    with open_dict(cfg):
        for k, v in values.items():
            cfg[k] = v
    return cfg


def run_train(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python train.py ARGS` as a user runs it, with the repo's conf/ and outputs under cwd: the real
    train.py as `__main__`, forked from a server that has done the ~6.5 CPU s of imports once
    (tests/forkserver.py; MOIRAI_FT_TEST_FORK=0 runs a plain subprocess)."""
    # one thread per job process: the tiny models gain nothing from more, and the suite shares 2 cores
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return forkserver.run([sys.executable, str(ROOT / "train.py"), *args], cwd, full_env, timeout)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # tests never reach the network; the hub library fails fast instead of retrying
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --- pytest-xdist: a module fixture shared by several tests (a trained job, a sweep) is built once --------
# xdist's default `load` mode hands out tests in small chunks, so the tests of one module-scoped fixture often
# landed on both workers and each built it (a whole sweep twice). `loadgroup` keeps each group on one worker,
# in the order below, and hands out every other test one at a time. xdist's own loadgroup names a group by
# appending it to the test's node id, which pytest 9 ignores (its node ids are no longer `_nodeid`), so the
# groups reach the scheduler through a file instead (tests/xdist_groups.py).

@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    # `-n 2` without an explicit --dist (and nothing to do with xdist off: `-p no:xdist`, `-n 0`)
    if getattr(config.option, "dist", None) == "no" and getattr(config.option, "numprocesses", None):
        config.option.dist = "loadgroup"
        config.option.loadscopereorder = False  # the order below, not xdist's (biggest group first)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    xdist_groups.configure_node(node)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    return xdist_groups.make_scheduler(config, log)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config, items):
    parent: dict[str, str] = {}  # union-find: tests that share any such fixture share one group

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    shared = {}
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = [info.name2fixturedefs[n][-1] for n in item.fixturenames if info and n in info.name2fixturedefs]
        # the suite's own module fixtures (session services are shared between workers under a lock already)
        keys = [f"{d.baseid}::{d.argname}" for d in defs if d.scope == "module" and d.baseid.startswith("tests")]
        for key in keys[1:]:
            parent[root(key)] = root(keys[0])
        if keys:
            shared[item] = keys[0]
    for item, key in shared.items():
        item.add_marker(pytest.mark.xdist_group(root(key)))
    xdist_groups.publish(config, items)


class _LongestFirst:
    @pytest.hookimpl(trylast=True)  # the final order, after pytest's own (by fixture)
    def pytest_collection_modifyitems(self, config, items):
        _longest_first(config, items)


def _longest_first(config, items) -> None:
    """The order xdist hands out the work in: the longest first, so that no long test starts at the end while
    the other worker has nothing left. First the cluster tests (most of their time is a wait on SLURM: it
    overlaps the other worker's work), then the slow ones (several real training jobs), then the groups (a
    module fixture's job or sweep, the biggest first), then the rest in collection order."""
    if not hasattr(config, "workerinput"):  # the order that counts is the workers' collection, which xdist reads
        return
    group = {item: (item.get_closest_marker("xdist_group") or pytest.mark.xdist_group("")).args[0] for item in items}
    sizes = collections.Counter(group.values())

    def rank(item) -> tuple[int, int]:
        if item.get_closest_marker("cluster"):
            return 0, 0
        if item.get_closest_marker("slow"):
            return 1, 0
        return (2, -sizes[group[item]]) if group[item] else (3, 0)

    items.sort(key=rank)  # stable: collection order within each rank

# --- real services for the tests marked `cluster` (tests/services): started once per test run, under a file lock
# shared by pytest-xdist's workers; the controller process stops at the end what this run started ---
SERVICES_OWNER = "MOIRAI_FT_SERVICES_OWNER"


def pytest_configure(config) -> None:
    config.pluginmanager.register(_LongestFirst(), "moirai_ft_longest_first")
    if not hasattr(config, "workerinput"):  # the controller (or the only process): the workers inherit its name
        os.environ.setdefault(SERVICES_OWNER, f"pytest-{os.getpid()}")


def pytest_unconfigure(config) -> None:
    forkserver.stop()  # this process's train.py server, if it started one
    xdist_groups.cleanup(config)
    if not hasattr(config, "workerinput") and os.environ.get(SERVICES_OWNER) == f"pytest-{os.getpid()}":
        from tests import services

        services.stop(owner=os.environ[SERVICES_OWNER])


def _service(kind: str):
    from tests import services

    try:
        return services.ensure(kind, owner=os.environ.get(SERVICES_OWNER, "manual"))
    except services.ServiceError as e:
        if os.environ.get("CI", "").lower() in ("true", "1"):  # CI installs and runs them: not starting is a failure
            pytest.fail(f"{kind} did not start: {e}", pytrace=False)
        pytest.skip(f"{kind} cannot start here: {e}")


@pytest.fixture(scope="session")
def slurm_cluster():
    """A single-node SLURM cluster; its `env` (SLURM_CONF) goes to every process that uses it."""
    return _service("slurm")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return _service("postgres").info["url"]


@pytest.fixture(scope="session")
def mlflow_server_url() -> str:
    return _service("mlflow").info["url"]
