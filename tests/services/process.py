"""What the three services share: free loopback ports, waiting for a daemon, stopping what was started, and
running a command as a dedicated system user (postgres and munged refuse to run as root)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence

LOOPBACK = "127.0.0.1"


class ServiceError(RuntimeError):
    """A service that cannot start here; its message is the one-line reason a test skips with."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def need(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None and not Path(p).is_file()]
    if missing:
        raise ServiceError(f"{', '.join(missing)} not installed (apt-get install slurm-wlm munge postgresql)")


def as_user(user: str | None) -> list[str]:
    """The prefix that runs a command as `user` when this process is root; nothing otherwise (a developer's
    own account runs the service itself)."""
    if user is None or os.geteuid() != 0:
        return []
    return ["runuser", "-u", user, "--"]


def owned_by(path: Path, user: str | None) -> None:
    if user is not None and os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def run(cmd: Sequence[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    """A command whose failure is a ServiceError quoting the end of its output."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ServiceError(f"{cmd[0]}: {e}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ServiceError(f"{' '.join(map(str, cmd[:3]))} failed ({proc.returncode}): {tail[0]}")
    return proc


def wait_for(ready: Callable[[], bool], what: str, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.5)
    last = ""
    if log is not None and log.is_file():
        lines = log.read_text(errors="replace").strip().splitlines()
        last = f"; last log line: {lines[-1][:200]}" if lines else ""
    raise ServiceError(f"{what} not ready after {timeout:.0f} s (log {log}){last}")


def alive(pid: int | None) -> bool:
    """Whether the process runs (a zombie, exited but not yet reaped by its parent, does not); Linux's /proc."""
    if not pid:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1][:1] != "Z"
    except OSError:
        return False


def read_pid(path: Path) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def terminate(pid: int | None, group: bool = False, grace: float = 10) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; `group`: the process group it leads (its children too)."""
    if not alive(pid):
        return
    kill = (lambda sig: os.killpg(pid, sig)) if group else (lambda sig: os.kill(pid, sig))
    try:
        kill(signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
        try:
            kill(signal.SIGKILL)
        except ProcessLookupError:
            pass
