"""A throwaway PostgreSQL server: `initdb` in the state directory (as the `postgres` user when root: the server
refuses to run as root), listening on 127.0.0.1 and its own port, trust authentication for loopback, and one
database for the tests' Optuna studies."""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path
from typing import Any

from tests.services.process import LOOPBACK, ServiceError, as_user, free_port, need, owned_by, run

USER = "postgres"
DATABASE = "moirai_ft"


def _bin(name: str) -> str:
    """initdb/pg_ctl: on PATH, else Debian's versioned directory."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise ServiceError(f"{name} not installed (apt-get install postgresql)")
    return found


def _system_user() -> str | None:
    return USER if os.geteuid() == 0 else None


def start(root: Path) -> dict[str, Any]:
    initdb, pg_ctl, createdb = _bin("initdb"), _bin("pg_ctl"), _bin("createdb")
    need(initdb, pg_ctl)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    owned_by(root, _system_user())
    data, port = root / "data", free_port()
    user = as_user(_system_user())
    run([*user, initdb, "-D", str(data), "-A", "trust", "-U", USER, "-E", "UTF8", "--no-sync"], timeout=120)
    options = f"-p {port} -k {root} -c listen_addresses={LOOPBACK} -c fsync=off"
    info = {"root": str(root), "data": str(data), "port": port, "pg_ctl": pg_ctl,
            "url": f"postgresql://{USER}@{LOOPBACK}:{port}/{DATABASE}"}
    try:
        run([*user, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "postgres.log"), "-w", "-t", "60", "start"],
            timeout=90)
        run([*user, createdb, "-h", LOOPBACK, "-p", str(port), "-U", USER, DATABASE])
    except ServiceError:
        stop(info)
        raise
    return info


def healthy(info: dict[str, Any]) -> bool:
    try:
        run([*as_user(_system_user()), info["pg_ctl"], "-D", info["data"], "status"], timeout=10)
        return True
    except (ServiceError, KeyError):
        return False


def stop(info: dict[str, Any]) -> None:
    if info.get("data") and Path(info["data"]).is_dir():
        try:
            run([*as_user(_system_user()), info["pg_ctl"], "-D", info["data"], "-m", "fast", "-w", "stop"], timeout=60)
        except ServiceError:
            pass


def client_env(info: dict[str, Any]) -> dict[str, str]:
    return {}
