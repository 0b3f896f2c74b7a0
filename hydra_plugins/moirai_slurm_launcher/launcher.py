"""hydra/launcher=slurm (conf/hydra/launcher/slurm.yaml): hydra-submitit-launcher's SlurmLauncher, plus what a
user of a real cluster needs from it:

- sbatch's refusal, or any other submission error, is one `error:` line (exit 2) that quotes sbatch and names
  the hydra.launcher.* setting that changes it (`submission_error`), not submitit's traceback;
- on a cluster without accounting (no slurmdbd: `sacct` fails), job states come from `squeue`, said once,
  instead of submitit's "Bypassing sacct error" on every poll;
- a job that SLURM ended without a result (scancel, node failure, time limit past its requeues) is a job of the
  sweep without a result, which the sweep's summary reports and the same command continues, not a traceback
  that abandons the other jobs' results.

Why launch() is written out here: hydra-submitit-launcher 1.2's launch() calls `job.results()` on each job in
turn and so raises on the first job that ended without a result; the executor it builds is the same.
"""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
import time
import warnings
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

# sbatch's refusals (Slurm 22.05 wording) -> the settings that change them
_GPU_SETTINGS = "hydra.launcher.gpus_per_node / hydra.launcher.gres"
_REFUSALS: tuple[tuple[str, str], ...] = (
    (r"generic resource|gres|gpus", "gpu"),
    (r"account", "hydra.launcher.account"),  # before partition: "Invalid account or account/partition combination"
    (r"qos", "hydra.launcher.qos"),
    (r"time limit", "hydra.launcher.timeout_min"),
    (r"partition", "hydra.launcher.partition"),
    (r"array", "hydra.sweeper.max_batch_size (jobs per array) / hydra.launcher.array_parallelism"),
    (r"memory|node configuration|processors|cpus|resources", "resources"),
)


def sbatch_message(error: str) -> str:
    """sbatch's own words, from submitit's error text: its `error:` lines, joined."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    said = [re.sub(r"^sbatch:\s*error:\s*", "", ln) for ln in lines if "error" in ln.lower()]
    return "; ".join(dict.fromkeys(said or lines[-1:] or ["no message"]))


def submission_error(error: str, hardware: str, uses_gpu: bool, params: dict[str, Any]) -> str:
    """One line: what sbatch said and the hydra.launcher.* setting that changes it."""
    said = sbatch_message(error)
    setting = next((s for pattern, s in _REFUSALS if re.search(pattern, said, re.IGNORECASE)), None)
    if setting == "gpu" or (setting == "resources" and uses_gpu and params.get("gpus_per_node")):
        hint = (f"this job asks for {params.get('gpus_per_node')} GPU(s) per node because hardware={hardware}; "
                f"on a partition without GPUs use hardware=cpu, else pick a GPU partition with "
                f"hydra.launcher.partition or set {_GPU_SETTINGS}")
    elif setting == "resources":
        asked = ", ".join(f"{k}={params[k]}" for k in ("cpus_per_task", "mem_gb", "cpus_per_gpu", "mem_per_gpu")
                          if params.get(k) is not None)
        keys = "cpus_per_gpu / mem_per_gpu" if uses_gpu else "cpus_per_task / mem_gb"
        hint = f"each job asks for {asked}: lower hydra.launcher.{keys.replace(' / ', ' / hydra.launcher.')} to what a node has"
    elif setting:
        hint = f"change {setting}" + (" (null: the cluster's default)" if setting.endswith(("partition", "account", "qos")) else "")
    else:
        hint = "see the hydra.launcher.* settings (conf/hydra/launcher/slurm.yaml)"
    return f"sbatch refused the sweep's job array: {said}; {hint}"


# squeue's reasons a pending job waits for a change the cluster will not make by itself (Slurm 22.05 accepts a
# job over a partition's limits unless EnforcePartLimits is set; it would wait forever) -> the setting to change
NEVER_RUNS = {
    "PartitionTimeLimit": "hydra.launcher.timeout_min (the partition's time limit: sinfo -o '%P %l')",
    "PartitionNodeLimit": "hydra.launcher.nodes",
    "PartitionConfig": "what each job asks for to fit the partition's limits (sinfo -o '%P %l %c %m'): "
                       "hydra.launcher.timeout_min, cpus_per_task / mem_gb (hardware=cpu) or gpus_per_node / "
                       "cpus_per_gpu / mem_per_gpu, or pick another hydra.launcher.partition",
    "BadConstraints": "hydra.launcher.constraint or the resources each job asks for",
    "InvalidAccount": "hydra.launcher.account",
    "InvalidQOS": "hydra.launcher.qos",
    "AccountNotAllowed": "hydra.launcher.account or hydra.launcher.partition",
    "QOSNotAllowed": "hydra.launcher.qos or hydra.launcher.partition",
    "AssocMaxWallDurationPerJobLimit": "hydra.launcher.timeout_min",
    "QOSMaxWallDurationPerJobLimit": "hydra.launcher.timeout_min",
}
FIRST_LOOK_S = 20  # how long after submitting the sweep looks for such a reason


def never_runs(job_id: str, timeout: float = FIRST_LOOK_S) -> tuple[str, str] | None:
    """(reason, setting) when squeue says the array's pending jobs wait for what will not come; None once the
    scheduler has looked at them and found nothing of the kind (or after `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = subprocess.run(["squeue", "--noheader", "--array", f"--jobs={job_id}", "--format=%T|%r"],
                              capture_output=True, text=True, timeout=60)
        rows = [ln.split("|", 1) for ln in proc.stdout.splitlines() if "|" in ln]
        if proc.returncode != 0 or not rows:
            return None  # gone already, or squeue cannot tell: submitit's waiting takes over
        pending = [reason.strip() for state, reason in rows if state.strip() == "PENDING"]
        bad = next((r for r in pending if r in NEVER_RUNS), None)
        if bad:
            return bad, NEVER_RUNS[bad]
        if all(r not in ("None", "") for r in pending):  # every pending job evaluated: it waits its turn
            return None
        time.sleep(1)
    return None


def has_accounting() -> bool:
    """Whether the cluster keeps job accounting (sacct answers); False where slurmdbd is absent."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return True  # cannot tell: submitit's sacct as usual
    match = re.search(r"^AccountingStorageType\s*=\s*(\S+)", out, re.MULTILINE)
    return not (match and match.group(1).endswith("/none"))


def _squeue_watcher():
    """submitit's SLURM job watcher, reading job states from squeue (sacct needs accounting)."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    class SqueueWatcher(SlurmInfoWatcher):
        GONE = "GONE"  # no longer listed: finished longer ago than the cluster's MinJobAge (the result file tells)

        def _make_command(self) -> list[str] | None:
            to_check = sorted({x.split("_")[0] for x in self._registered - self._finished})
            if not to_check:
                return None
            return ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T", f"--jobs={','.join(to_check)}"]

        def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
            text = string.decode() if isinstance(string, bytes) else string
            info = {}
            for line in text.splitlines():
                job_id, _, state = line.strip().partition("|")
                if job_id:
                    info[job_id] = {"State": state.strip()}
            return info

        def update(self) -> None:
            command = self._make_command()
            if command is None:
                return
            self._num_calls += 1
            proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
            listed = self.read_info(proc.stdout) if proc.returncode == 0 or "Invalid job id" in proc.stderr else None
            if listed is not None:  # else squeue failed (the controller busy): states as they were, asked again later
                for job_id in self._registered - self._finished:
                    self._info_dict[job_id] = listed.get(job_id, {"State": self.GONE})
            self._last_status_check = time.time()
            for job_id in self._registered - self._finished:
                if self.is_done(job_id, mode="cache"):
                    self._finished.add(job_id)

    return SqueueWatcher(delay_s=60)


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    _squeue: Any = None  # one watcher for the process's jobs where the cluster has no accounting (False: it has)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit
        from submitit.core.utils import FailedJobError, UncompletedJobError

        assert self.config is not None and len(job_overrides) > 0
        try:
            executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=self.params["submitit_folder"],
                                             slurm_max_num_timeout=self.params["max_num_timeout"])
        except RuntimeError as e:  # submitit found no srun
            self._refuse(f"hydra/launcher=slurm needs SLURM's commands (sbatch, srun) on PATH ({e}); run the sweep on "
                         "the cluster's login node, or use hydra/launcher=local on this machine")
        # submitit warns that --cpus-per-gpu wants --gpus-per-task; sbatch takes it with --gpus-per-node too (one
        # task per job here), and a warning line would bury the one line a refusal prints
        warnings.filterwarnings("ignore", message='"cpus_per_gpu" requires')
        generic = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in generic else f"slurm_{k}": v for k, v in self.params.items()
                                      if k not in ("submitit_folder", "max_num_timeout")})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
        job_params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        said = io.StringIO()
        try:
            with redirect_stderr(said):  # submitit prints sbatch's stderr before raising it: said once, below
                jobs = executor.map_array(self, *zip(*job_params))
        except (FailedJobError, subprocess.SubprocessError, OSError) as e:
            self._refuse(submission_error(f"{said.getvalue()}\n{e}", str(self.config.hardware.name),
                                          str(self.config.hardware.accelerator) != "cpu", self.params))
        array = jobs[0].job_id.split("_")[0]
        log.info(f"job array {array}: {len(jobs)} job(s)")
        if stuck := never_runs(array):
            subprocess.run(["scancel", array], capture_output=True, timeout=60)
            self._refuse(f"SLURM accepted the sweep's job array {array} but will never start it (squeue reason "
                         f"{stuck[0]}); cancelled it: change {stuck[1]}")
        watcher = self._watcher()
        returns = []
        for job, overrides in zip(jobs, job_overrides):
            if watcher is not None:
                job.watcher = watcher
            try:
                returns.append(job.results()[0])
            except UncompletedJobError:
                # the job's own record (metrics.json, checkpoints) stays in its directory: the sweep's summary
                # lists it without a result, and the same command continues it. COMPLETED here only means the
                # launcher is done with it; the sweepers read no value from it.
                log.warning(f"SLURM job {job.job_id} ended without a result (state {job.state}); "
                            f"the same command again continues it: {' '.join(filter_overrides(overrides))}")
                returns.append(JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=None))
        return returns

    @staticmethod
    def _refuse(message: str) -> None:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)

    @classmethod
    def _watcher(cls):
        """squeue's watcher where the cluster has no accounting (said once per process); None: submitit's sacct."""
        if cls._squeue is None:
            cls._squeue = not has_accounting() and _squeue_watcher()
            if cls._squeue:
                log.info("this SLURM cluster keeps no accounting (no sacct): job states come from squeue")
        return cls._squeue or None
