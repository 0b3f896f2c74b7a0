"""One job on several devices (Lightning DDP): how its processes start, which one this is, and how
batches are split between them.

`python train.py hardware=ddp hardware.devices=2` runs one job in two processes. This process is rank 0
and starts ranks 1..N-1 itself (`python -m moirai_ft.train.rank <job_dir>`, the composed config handed
over on stdin) before Lightning builds its Trainer, with torchrun's environment (TORCHELASTIC_RUN_ID, RANK,
LOCAL_RANK, GROUP_RANK, LOCAL_WORLD_SIZE, WORLD_SIZE, MASTER_ADDR/PORT): Lightning's TorchElasticEnvironment then
reads the ranks, also inside a SLURM allocation, where it takes precedence over SLURMEnvironment.
Lightning's own launcher is not used because it re-runs `sys.argv`: in a Hydra sweep that re-runs the
whole sweep (`-m` and every swept value), and under submitit it re-runs submitit's entry point. Ranks
started by srun or torchrun would each run train.py: each its own `${now:}` run directory and each
taking the job's lock (moirai_ft/sweep/runner.py). A handed-over config is the same job, in the same
directory, whatever launched rank 0: a plain run, a sweep, submitit_local or one SLURM task
(hydra/launcher=slurm asks for one task with hardware.devices GPUs).

Every rank runs the same job code on the same data and seed; `batch_size` is the global batch, each
rank takes its share of every batch, and only rank 0 writes the job's files.
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from jaxtyping import Int
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor

from moirai_ft.errors import UserError

log = logging.getLogger(__name__)

# Strategies whose ranks are separate processes running this same script, which we can start ourselves.
# ("auto" with several devices is Lightning's ddp.) Spawn/fork variants pickle the job into workers and
# lose the callbacks' state; they are not offered.
SCRIPT_STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true")
# the rank environment we set for the ranks we start (restored afterwards: a sweep runs jobs in one process)
RANK_ENV = (
    "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE",
    "TORCHELASTIC_RUN_ID", "OMP_NUM_THREADS",
)
CHILD_EXIT_GRACE_S = 120.0  # after rank 0 is done, how long the other ranks get to finish before a kill
STUCK_GRACE_S = 30.0  # after another rank failed, how long rank 0 gets to notice before it is stopped
_past_collectives = threading.Event()  # set by the job once rank 0 no longer waits on the other ranks


def num_devices(hardware: DictConfig) -> int:
    """hardware.devices as a count: an integer, or a list of device ids."""
    devices = hardware.devices
    if isinstance(devices, (list, tuple, ListConfig)):
        return len(devices)
    if isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1:
        return devices
    if isinstance(devices, str) and devices.isdigit() and int(devices) >= 1:
        return int(devices)
    raise UserError(
        f"hardware.devices must be a number of devices >= 1 or a list of device ids (got {devices!r}); "
        "e.g. hardware.devices=2 (the job's global batch_size is split between them)"
    )


def world_size(cfg: DictConfig) -> int:
    """Processes the job runs in (one node): hardware.devices under a DDP strategy."""
    n = num_devices(cfg.hardware)
    if n > 1 and cfg.hardware.strategy not in SCRIPT_STRATEGIES:
        raise UserError(
            f"hardware.strategy={cfg.hardware.strategy} with {n} devices is not supported; use one of "
            f"{list(SCRIPT_STRATEGIES)} (hardware=ddp sets ddp)"
        )
    return n


def global_rank() -> int:
    """This process's rank, from the environment its launcher set (Lightning's own order of variables)."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key])
    return 0


def per_device_batch_size(batch_size: int, world: int) -> int:
    """`batch_size` is the global batch: the same samples per optimiser step on any number of devices."""
    if batch_size % world:
        lower, upper = batch_size - batch_size % world, batch_size + world - batch_size % world
        raise UserError(
            f"batch_size={batch_size} is the global batch and must split evenly over {world} devices; "
            f"use a multiple of {world} (e.g. batch_size={lower or upper} or {upper})"
        )
    return batch_size // world


def shard_batches(batches: Sequence[Int[Tensor, "b"]], rank: int, world: int, batch_size: int) -> list[Int[Tensor, "b"]]:
    """This rank's share of fixed evaluation batches: every world-th window, in batches of `batch_size`.
    Ranks may hold one window more or less; the loss is reduced as a sum and a count, so the mean over
    windows is exact."""
    ids = torch.cat(list(batches)) if batches else torch.empty(0, dtype=torch.long)
    if len(ids) < world:
        raise UserError(
            f"{len(ids)} validation windows cannot be shared by {world} devices; use fewer devices, "
            "a longer validation split (data.val_ratio) or a smaller data.eval_stride"
        )
    return list(torch.split(ids[rank::world], batch_size))


def check_trainer(trainer: L.Trainer, rank: int, world: int) -> None:
    """The sampler was built for (rank, world) before the Trainer existed: the Trainer must agree."""
    if (trainer.global_rank, trainer.world_size) != (rank, world):
        raise RuntimeError(
            f"Lightning runs this process as rank {trainer.global_rank} of {trainer.world_size}, but the "
            f"environment said rank {rank} of {world}; check hardware.devices against the launcher's tasks"
        )


def _created_externally() -> bool:
    """Whether this process is a rank that our rank 0 (or torchrun) started, rather than the job's start."""
    if "LOCAL_RANK" in os.environ or TorchElasticEnvironment.detect():
        return True
    tasks = int(os.environ.get("SLURM_NTASKS", "1")) if SLURMEnvironment.detect() else 1
    if tasks > 1:
        raise UserError(
            f"this SLURM job runs {tasks} tasks; run one task per job (hydra/launcher=slurm does, or "
            "--ntasks-per-node=1 in your own sbatch script) and let hardware.devices start one process per device"
        )
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _threads_per_rank(world: int) -> int:
    # as Lightning's own launcher does: the CPU's cores shared between the ranks, not each rank taking all
    return max(1, len(os.sched_getaffinity(0)) // world)


def collectives_finished() -> None:
    """Called by the job after training: from here rank 0 waits on no other rank (test evaluation and
    the artifacts are its own), so another rank exiting cannot leave it stuck."""
    _past_collectives.set()


def _watch(children: dict[int, subprocess.Popen], done: threading.Event, on_stuck: Callable[[str], None]) -> None:
    """If another rank dies while rank 0 waits for it in a collective (NCCL waits 30 minutes, and so does
    the rendezvous before training; gloo raises at once during training), record the failure and stop
    this process, as Lightning's own launcher does."""
    while not done.wait(2.0):
        failed = {r: p.returncode for r, p in children.items() if p.poll() not in (None, 0)}
        if not failed:
            continue
        if done.wait(STUCK_GRACE_S) or _past_collectives.is_set():
            return  # rank 0 noticed and finished (run() recorded the job), or it no longer needs the others
        rank, code = next(iter(failed.items()))
        message = f"rank {rank} of the job exited with code {code} and rank 0 was left waiting; see rank {rank}'s output"
        log.error(message)
        for p in children.values():
            p.kill()
        on_stuck(message)
        os._exit(1)


@contextmanager
def job_processes(cfg: DictConfig, job_dir: Path, on_stuck: Callable[[str], None]) -> Iterator[None]:
    """Around one job: when it needs several processes and no launcher created them, start ranks
    1..N-1 (this process is rank 0) and stop them afterwards. Otherwise nothing."""
    world = world_size(cfg)
    if world == 1 or _created_externally():
        yield
        return
    per_device_batch_size(cfg.batch_size, world)  # a config error before any process starts
    saved = {k: os.environ.get(k) for k in RANK_ENV}
    saved_threads = torch.get_num_threads()
    children: dict[int, subprocess.Popen] = {}
    done = threading.Event()
    _past_collectives.clear()
    try:
        threads = os.environ.get("OMP_NUM_THREADS") or str(_threads_per_rank(world))
        os.environ.update(  # torchrun's variables, one node
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(world), RANK="0",
            LOCAL_RANK="0", GROUP_RANK="0", LOCAL_WORLD_SIZE=str(world),
            TORCHELASTIC_RUN_ID=f"moirai-ft-{os.getpid()}", OMP_NUM_THREADS=threads,
        )
        torch.set_num_threads(int(threads))
        # resolved: the other ranks have no Hydra to resolve ${hydra:...} or ${now:...}
        handoff = pickle.dumps(_resolved(cfg))
        package_root = str(Path(__file__).resolve().parents[2])  # importable when train.py ran from elsewhere
        for rank in range(1, world):
            env = {**os.environ, "LOCAL_RANK": str(rank), "RANK": str(rank)}
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
            child = subprocess.Popen(
                [sys.executable, "-m", "moirai_ft.train.rank", str(job_dir)], env=env, stdin=subprocess.PIPE
            )
            children[rank] = child
            child.stdin.write(handoff)
            child.stdin.close()
        log.info("job runs on %d processes: ranks 1..%d are pids %s", world, world - 1, [p.pid for p in children.values()])
        threading.Thread(target=_watch, args=(children, done, on_stuck), daemon=True, name="ddp-ranks").start()
        yield
    except BaseException as e:
        # rank 0 failed: the other ranks are stopped at once (they may wait in a collective forever)
        done.set()
        died_first = {r: p.poll() for r, p in children.items() if p.poll() not in (None, 0)}
        _stop(children, grace_s=0.0)
        if died_first and not isinstance(e, UserError):  # rank 0's error is then "connection closed": name the rank
            rank, code = next(iter(died_first.items()))
            raise RuntimeError(f"rank {rank} of the job exited with code {code}; see its output") from e
        raise
    else:
        done.set()
        _stop(children, grace_s=CHILD_EXIT_GRACE_S)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # the next job of a sweep starts a fresh group
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(saved_threads)


def _stop(children: dict[int, subprocess.Popen], grace_s: float) -> None:
    """Wait up to grace_s (in all) for the other ranks to exit, then kill the rest."""
    deadline = time.monotonic() + grace_s
    for rank, child in children.items():
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            if grace_s > 0:
                log.warning("rank %d (pid %d) did not finish after rank 0; stopping it", rank, child.pid)
            child.kill()
            child.wait()


def _resolved(cfg: DictConfig) -> DictConfig:
    resolved = copy.deepcopy(cfg)
    OmegaConf.resolve(resolved)
    return resolved
