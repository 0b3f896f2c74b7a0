"""An MLflow tracking server (`mlflow server`, the full mlflow package): a SQLite backend store and served
artifacts in the state directory, on 127.0.0.1 and its own port."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from tests.services.process import LOOPBACK, ServiceError, alive, free_port, terminate, wait_for


def start(root: Path) -> dict[str, Any]:
    try:
        import mlflow.server  # noqa: F401  (the server is in `mlflow`, not in `mlflow-skinny`)
    except ImportError as e:
        raise ServiceError(f"the MLflow server needs the full mlflow package (pip install -e '.[dev]'): {e}") from None
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    log = root / "server.log"
    with log.open("wb") as out:  # its own session: stopped as a group (uvicorn and MLflow's job runner with it)
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", LOOPBACK, "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root, start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
    info = {"root": str(root), "pid": proc.pid, "port": port, "url": url}
    try:
        wait_for(lambda: _answers(url) or not alive(proc.pid), "mlflow server", 180, log)
        if not alive(proc.pid):
            raise ServiceError(f"mlflow server exited ({proc.poll()}); see {log}")
    except ServiceError:
        stop(info)
        raise
    return info


def _answers(url: str) -> bool:
    try:
        # generous: a busy server (a job logging to it) is slow, and `ensure` restarts one that seems dead, store and all
        with urllib.request.urlopen(f"{url}/health", timeout=15) as r:
            return r.status == 200
    except OSError:
        return False


def healthy(info: dict[str, Any]) -> bool:
    return alive(info.get("pid")) and _answers(info.get("url", ""))


def stop(info: dict[str, Any]) -> None:
    terminate(info.get("pid"), group=True)


def client_env(info: dict[str, Any]) -> dict[str, str]:
    return {}
