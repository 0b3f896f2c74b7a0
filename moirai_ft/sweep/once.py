"""Results computed once per key and shared by the jobs of a sweep, in a directory every job can reach
(the zero-shot baseline's: moirai_ft/evaluation/zero_shot.py). Torch-free: files only.

    <root>/<name>/                 an entry: complete, never changed once there
    <root>/<name>.lock             held (flock) by the job computing the entry
    <root>/.<name>.<host>.<pid>/   an entry being written
    <root>/computed.log            one line per computation (what was computed, by whom): `computations()`

A job asks for an entry with `claim(name)`. If it exists, the job reads it. If not, the job takes the
entry's lock, computes, writes the files into its own staging directory and publishes them by renaming
that directory to the entry's name, then lets the lock go. A job that finds the lock taken waits for it,
then reads what the holder published. Why this holds up when jobs run at once, in other processes or on
other nodes over a shared file system:

- The lock only saves work; correctness rests on the publication. An entry's content is a function of its
  name (the name is a hash of everything that changes the result), so two jobs that both compute it write
  the same thing; a directory rename is atomic (also on NFS, where it is one server operation), so a reader
  sees a whole entry or none; and a rename onto an entry that appeared meanwhile fails, leaving the first.
- A job that dies while computing: the kernel drops its flock (on NFS the server does, once the dead
  client's lease expires, about 90 s for NFSv4); the next waiter takes the lock, finds no entry and
  computes. Its staging directory is removed later by a job holding the lock.
- A file system without working locks (NFS mounted `nolock` across nodes, Lustre without `-o flock`): flock
  fails or locks one node only; the jobs then compute in parallel and the first publication wins.
- A lock held longer than `max_wait_s` (a holder hung, or a node gone without releasing its NFS lock):
  the waiter stops waiting and computes itself.
- NFS caches directory lookups: a job on another node may not see an entry published a moment ago and
  compute it again. That costs the work, never a wrong result.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

COMPUTED_LOG = "computed.log"
LOCK_SUFFIX = ".lock"
MAX_WAIT_S = 3600.0  # then compute anyway: a zero-shot evaluation of a large model on CPU can take this long
POLL_S = 0.2
STALE_STAGING_S = 24 * 3600.0  # a staging directory this old was left by a job that died writing it


@dataclass
class Claim:
    """What `claim` found: the published entry (read it), or nothing (compute, then `publish`)."""

    store: OnceStore
    name: str
    found: Path | None
    by: str

    def publish(self, files: dict[str, bytes]) -> Path:
        """Write the entry's files and make them visible at once; returns the entry's directory."""
        return self.store.publish(self.name, files, self.by)


class OnceStore:
    def __init__(self, root: Path, max_wait_s: float = MAX_WAIT_S, poll_s: float = POLL_S):
        self.root = Path(root)
        self.max_wait_s, self.poll_s = max_wait_s, poll_s

    def entry(self, name: str) -> Path | None:
        """The published entry, or None. Looked up by opening the directory: on NFS, an open revalidates
        what the client cached about it (close-to-open consistency)."""
        path = self.root / name
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_DIRECTORY))
        except OSError:
            return None
        return path

    @contextmanager
    def claim(self, name: str, by: str) -> Iterator[Claim]:
        """The entry `name` if published; else, under its lock, a Claim to compute and publish it (`by`: who
        computes, for computed.log). An exception in the block publishes nothing and releases the lock."""
        found = self.entry(name)
        if found is not None:
            yield Claim(self, name, found, by)
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked(name):
            found = self.entry(name)  # published while this job waited
            if found is None:
                self._remove_stale_staging(name)
            yield Claim(self, name, found, by)

    def publish(self, name: str, files: dict[str, bytes], by: str) -> Path:
        target = self.root / name
        staging = self.root / f".{name}.{socket.gethostname()}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            for file, content in files.items():
                with open(staging / file, "wb") as f:
                    f.write(content)
                    f.flush()
                    os.fsync(f.fileno())
            try:
                os.rename(staging, target)
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                log.info("%s was published meanwhile by another job; keeping that one", name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._record(name, by)
        return target

    def _record(self, name: str, by: str) -> None:
        """One line per computation (O_APPEND: whole lines from concurrent jobs on one machine)."""
        line = json.dumps({"name": name, "by": by, "host": socket.gethostname(), "pid": os.getpid(),
                           "time": round(time.time(), 3)}) + "\n"
        fd = os.open(self.root / COMPUTED_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    @contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """flock on <name>.lock, waiting while another job holds it (at most max_wait_s); no lock at all
        where the file system refuses one."""
        fd = os.open(self.root / f"{name}{LOCK_SUFFIX}", os.O_RDWR | os.O_CREAT, 0o644)
        locked = False
        try:
            deadline, waited = time.monotonic() + self.max_wait_s, False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    locked = True
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES):  # ENOLCK, EOPNOTSUPP...: no locks here
                        log.warning("no lock on %s (%s): computing without one", self.root, e.strerror or e)
                        break
                if self.entry(name) is not None:
                    break  # published while the holder still holds the lock
                if time.monotonic() > deadline:
                    log.warning("%s: still locked after %.0f s; computing it here", name, self.max_wait_s)
                    break
                if not waited:
                    log.info("waiting for another job computing %s", name)
                    waited = True
                time.sleep(self.poll_s)
            yield
        finally:
            if locked:
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _remove_stale_staging(self, name: str) -> None:
        for path in self.root.glob(f".{name}.*"):
            try:
                if time.time() - path.stat().st_mtime > STALE_STAGING_S:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass


def computations(root: Path) -> list[dict[str, Any]]:
    """computed.log's records: one per computation of an entry."""
    path = Path(root) / COMPUTED_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
