"""Computed once, shared by concurrent jobs (moirai_ft/sweep/once.py): real processes, real flock, real
renames; a holder killed mid-computation and a lock held past the wait."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT
from moirai_ft.sweep.once import LOCK_SUFFIX, OnceStore, computations


# a job: read the entry, or compute it (slowly) and publish it; prints what it read (torch-free: starts fast)
JOB = """
import json, os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from moirai_ft.sweep.once import OnceStore
with OnceStore(Path(sys.argv[1]), poll_s=0.05).claim(sys.argv[2], by=str(os.getpid())) as claim:
    if claim.found is None:
        time.sleep(float(sys.argv[3]))
        entry = claim.publish({"value.json": json.dumps({"computed_by": os.getpid()}).encode()})
    else:
        entry = claim.found
print((entry / "value.json").read_text())
"""


def test_concurrent_processes_compute_an_entry_once_and_all_read_it(tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", JOB, str(tmp_path / "store"), "entry-1", "1.0", str(ROOT)],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(computations(tmp_path / "store")) == 1  # one computed, three waited and read it
    assert len(set(outs)) == 1 and "computed_by" in outs[0]
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.startswith(".")]  # no staging left


HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _holder(lock: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_holder_killed_mid_computation_lets_the_next_job_compute(tmp_path: Path) -> None:
    store = OnceStore(tmp_path, poll_s=0.05)
    holder = _holder(tmp_path / f"entry-2{LOCK_SUFFIX}", 600)  # computing, until it dies
    started = time.monotonic()
    killer = subprocess.Popen([sys.executable, "-c", f"import os, signal, time; time.sleep(1); os.kill({holder.pid}, signal.SIGKILL)"])
    with store.claim("entry-2", by="next") as claim:  # waits while the holder lives, then computes
        assert claim.found is None
        claim.publish({"v": b"1"})
    assert 0.9 < time.monotonic() - started < 60
    killer.wait()
    holder.wait()
    assert [c["by"] for c in computations(tmp_path)] == ["next"]
    with store.claim("entry-2", by="later") as claim:  # published: read, not computed again
        assert claim.found is not None and (claim.found / "v").read_bytes() == b"1"
    assert len(computations(tmp_path)) == 1


def test_a_lock_held_past_the_wait_is_computed_anyway_and_the_first_publication_wins(tmp_path: Path) -> None:
    holder = _holder(tmp_path / f"entry-3{LOCK_SUFFIX}", 600)  # a hung holder (or a node gone with its NFS lock)
    try:
        with OnceStore(tmp_path, max_wait_s=0.5, poll_s=0.05).claim("entry-3", by="impatient") as claim:
            assert claim.found is None
            first = OnceStore(tmp_path)  # meanwhile a lock-less job (another node) published it
            first.publish("entry-3", {"v": b"first"}, by="other node")
            claim.publish({"v": b"second"})  # the same name: the same content in real use; the first stays
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / "entry-3" / "v").read_bytes() == b"first"
    assert sorted(c["by"] for c in computations(tmp_path)) == ["impatient", "other node"]


def test_a_failed_computation_publishes_nothing_and_releases_the_lock(tmp_path: Path) -> None:
    store = OnceStore(tmp_path, max_wait_s=5)
    try:
        with store.claim("entry-4", by="crashing") as claim:
            assert claim.found is None
            raise RuntimeError("out of memory")
    except RuntimeError:
        pass
    assert store.entry("entry-4") is None and computations(tmp_path) == []
    with store.claim("entry-4", by="next") as claim:  # not left waiting on a lock
        assert claim.found is None
