"""Real services for the `cluster` tests, started on this machine on loopback only: a single-node SLURM cluster
(slurmctld, slurmd, munge), a throwaway PostgreSQL server and an MLflow tracking server.

    python -m tests.services start     # idempotent: starts what is not running, prints the endpoints
    python -m tests.services status
    python -m tests.services stop      # stops what `start` started, removes its state

Everything lives in one state directory (MOIRAI_FT_SERVICES_DIR, default <tmp>/moirai-ft-services-<checkout
hash>): configs, data, logs, and services.json, which records each running service's endpoint, its processes
and who started it. The tests' fixtures (tests/conftest.py) call `ensure` under a file lock, so pytest-xdist's
workers start each service once, and pytest's controller stops at the end what its session started.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tests.services import mlflow_server, postgres, slurm
from tests.services.process import ServiceError

ROOT = Path(__file__).resolve().parents[2]
STATE = "services.json"
KINDS: dict[str, Any] = {"slurm": slurm, "postgres": postgres, "mlflow": mlflow_server}  # the order they start in


def state_dir() -> Path:
    given = os.environ.get("MOIRAI_FT_SERVICES_DIR")
    if given:
        return Path(given)
    checkout = hashlib.sha1(str(ROOT).encode()).hexdigest()[:8]  # two checkouts' test runs keep their own services
    return Path(tempfile.gettempdir()) / f"moirai-ft-services-{checkout}"


@dataclass
class Service:
    kind: str
    info: dict[str, Any]  # the module's record: endpoint and how to stop it
    env: dict[str, str]  # what a client process needs (SLURM_CONF, ...)


@contextmanager
def _locked(directory: Path) -> Iterator[dict[str, Any]]:
    """The state file, read and written under an exclusive lock (every test process, and the CLI)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)  # the postgres and munge users read their files below it
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = directory / STATE
        state = json.loads(path.read_text()) if path.is_file() else {}
        yield state
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(path)
    finally:
        os.close(fd)


def ensure(kind: str, owner: str = "manual") -> Service:
    """The service running (started now if it is not, recorded as started by `owner`); ServiceError with a
    one-line reason when it cannot start here."""
    module = KINDS[kind]
    directory = state_dir()
    with _locked(directory) as state:
        record = state.get(kind)
        if record and record.get("info") and module.healthy(record["info"]):
            return Service(kind, record["info"], module.client_env(record["info"]))
        if record and record.get("info"):  # recorded but not answering: what is left of it goes first
            module.stop(record["info"])
        state.pop(kind, None)
        info = module.start(directory / kind)  # raises ServiceError
        state[kind] = {"owner": owner, "info": info}
        return Service(kind, info, module.client_env(info))


def stop(owner: str | None = None) -> list[str]:
    """Stop the services `owner` started (every one when None); the names of those stopped."""
    stopped = []
    with _locked(state_dir()) as state:
        for kind in reversed(list(KINDS)):
            record = state.get(kind)
            if record and (owner is None or record.get("owner") == owner):
                KINDS[kind].stop(record.get("info") or {})
                state.pop(kind)
                stopped.append(kind)
    return stopped


def status() -> dict[str, Any]:
    with _locked(state_dir()) as state:
        return {kind: {**record, "healthy": bool(record.get("info")) and KINDS[kind].healthy(record["info"])}
                for kind, record in state.items()}


__all__ = ["KINDS", "Service", "ServiceError", "ensure", "state_dir", "status", "stop"]
