"""A single-node SLURM cluster from Debian's slurm-wlm packages: munged with its own key and socket, slurmctld
and slurmd with the node's real CPUs and memory (`slurmd -C`), state and spool in the state directory, every
daemon on 127.0.0.1 and its own ports. No accounting (no slurmdbd), as on many small clusters."""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any

from tests.services.process import (
    LOOPBACK, ServiceError, alive, as_user, free_port, need, owned_by, read_pid, run, terminate, wait_for,
)

CLUSTER, PARTITION, NODE = "moiraift", "debug", "moiraift-node"
MUNGE_USER = "munge"
RESERVED_MB = 2048  # memory left to the machine itself


def node_line(conf_dir: Path) -> str:
    """The node as slurmd detects it (CPUs, sockets, cores, threads, memory), under our node name."""
    detected = run(["slurmd", "-C"], env={**os.environ, "SLURM_CONF": str(conf_dir / "slurm.conf")}).stdout
    line = next((ln for ln in detected.splitlines() if ln.startswith("NodeName=")), None)
    if line is None:
        raise ServiceError(f"slurmd -C printed no node line: {detected.strip()[:200]}")
    fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
    memory = max(512, int(fields.get("RealMemory", "2048")) - RESERVED_MB)
    keep = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
    return " ".join([f"NodeName={NODE} NodeAddr={LOOPBACK} NodeHostname={socket.gethostname()}",
                     *(f"{k}={fields[k]}" for k in keep if k in fields), f"RealMemory={memory} State=UNKNOWN"])


def write_conf(root: Path, munge_socket: Path) -> dict[str, Any]:
    ctld_port, slurmd_port = free_port(), free_port()
    user = "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
    (root / "state").mkdir(parents=True, exist_ok=True)
    (root / "spool").mkdir(parents=True, exist_ok=True)
    conf = root / "slurm.conf"
    lines = [
        f"ClusterName={CLUSTER}",
        f"SlurmctldHost={socket.gethostname()}({LOOPBACK})",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        "CommunicationParameters=NoInAddrAny,NoCtldInAddrAny",  # listen on the configured address (loopback) only
        f"SlurmUser={user}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        # cred_expire: also how long a requeued job waits before it may start again (default 120 s)
        f"AuthInfo=socket={munge_socket},cred_expire=30",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",  # no cgroups in a container
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "ReturnToService=2",
        "MpiDefault=none",
        "SchedulerType=sched/backfill",
        "KillWait=5",  # a cancelled job's processes get SIGKILL 5 s after SIGTERM (default 30)
        "MinJobAge=600",  # finished jobs stay visible to squeue for 10 minutes
    ]
    conf.write_text("\n".join(lines) + "\n")
    node = node_line(root)
    conf.write_text(conf.read_text() + node + "\n"
                    # the tests' jobs are tiny or asleep (waiting for scancel or their time limit): up to 4 share
                    # each of the node's real CPUs, so a sleeping job does not hold a CPU another test needs
                    + f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP "
                    "OverSubscribe=FORCE:4\n")
    return {"conf": str(conf), "ctld_port": ctld_port, "slurmd_port": slurmd_port, "node": node}


def start_munge(root: Path) -> dict[str, Any]:
    munge = root / "munge"
    munge.mkdir(parents=True, exist_ok=True)
    munge.chmod(0o700)
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    for path in (munge, key):
        owned_by(path, MUNGE_USER)
    sock, pid_file = munge / "munge.socket", munge / "munged.pid"
    run([*as_user(MUNGE_USER), "munged", f"--socket={sock}", f"--key-file={key}", f"--pid-file={pid_file}",
         f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'munged.seed'}", "--force"])
    wait_for(lambda: sock.exists() and alive(read_pid(pid_file)), "munged", 20, munge / "munged.log")
    return {"munge_socket": str(sock), "munged_pid": read_pid(pid_file)}


def start(root: Path) -> dict[str, Any]:
    need("munged", "slurmctld", "slurmd", "sbatch", "squeue")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    info: dict[str, Any] = {"root": str(root)}
    try:
        info.update(start_munge(root))
        info.update(write_conf(root, Path(info["munge_socket"])))
        env = client_env(info)
        run(["slurmctld", "-c"], env={**os.environ, **env})  # -c: a fresh cluster, no saved jobs
        wait_for(lambda: alive(read_pid(root / "slurmctld.pid")), "slurmctld", 30, root / "slurmctld.log")
        info["slurmctld_pid"] = read_pid(root / "slurmctld.pid")
        run(["slurmd", "-N", NODE], env={**os.environ, **env})
        wait_for(lambda: alive(read_pid(root / "slurmd.pid")), "slurmd", 30, root / "slurmd.log")
        info["slurmd_pid"] = read_pid(root / "slurmd.pid")
        wait_for(lambda: node_state(info) in ("idle", "mixed", "allocated"), f"node {NODE}", 60, root / "slurmctld.log")
    except ServiceError:
        stop(info)
        raise
    return info


def node_state(info: dict[str, Any]) -> str:
    try:
        out = run(["sinfo", "-h", "-N", "-o", "%T"], timeout=10, env={**os.environ, **client_env(info)}).stdout
    except ServiceError:
        return ""
    return out.strip().split("\n")[0].rstrip("*~#")


def healthy(info: dict[str, Any]) -> bool:
    pids = [info.get(k) for k in ("munged_pid", "slurmctld_pid", "slurmd_pid")]
    return all(alive(p) for p in pids) and node_state(info) in ("idle", "mixed", "allocated")


def stop(info: dict[str, Any]) -> None:
    """Cancel the cluster's jobs, stop its daemons, then end what its jobs left (slurmstepd, srun and the job
    processes, which ignore SIGTERM under submitit)."""
    if healthy(info):
        try:
            run(["scancel", "--full", f"--partition={PARTITION}"], timeout=30, env={**os.environ, **client_env(info)})
        except ServiceError:
            pass
    for key in ("slurmd_pid", "slurmctld_pid", "munged_pid"):
        terminate(info.get(key))
    if info.get("conf"):
        for pid in _job_processes(info["conf"]):
            terminate(pid, grace=2)
    if info.get("root"):
        for pid in _processes_with_cmdline(info["root"]):
            terminate(pid, grace=2)


def _job_processes(conf: str) -> list[int]:
    """slurmstepd and the jobs' processes of the cluster whose config is `conf` (not a shell that only
    exported its SLURM_CONF)."""
    def match(proc: Path) -> bool:
        env = (proc / "environ").read_bytes().split(b"\0")
        if f"SLURM_CONF={conf}".encode() not in env:
            return False
        return any(e.startswith(b"SLURM_JOB_ID=") for e in env) or (proc / "cmdline").read_bytes().startswith(b"slurmstepd")

    return _scan(match)


def _processes_with_cmdline(text: str) -> list[int]:
    return _scan(lambda proc: text.encode() in (proc / "cmdline").read_bytes())


def _scan(match) -> list[int]:
    found, own = [], {os.getpid(), os.getppid()}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) not in own:
            try:
                if match(proc):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def client_env(info: dict[str, Any]) -> dict[str, str]:
    return {"SLURM_CONF": info["conf"]} if info.get("conf") else {}


def sbatch_version() -> str:
    out = run(["sbatch", "--version"]).stdout.strip()
    return re.sub(r"^slurm(-wlm)?\s*", "", out)
