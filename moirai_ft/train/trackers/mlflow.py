"""logger=mlflow: Lightning's MLFlowLogger; one run per job, one experiment per run or sweep directory.

The embedded store is SQLite (`<run dir>/mlflow/mlflow.db`, artifacts beside it): MLflow 3 refuses its file
store (`./mlruns`) unless told otherwise. A sweep's jobs share the store in the sweep directory, also when the
local launcher runs them at once: SQLite serialises their writes, and creating the store or the experiment,
which MLflow does not guard against a concurrent twin, happens under a file lock. `tracking_uri` set: a server,
which must answer when the job starts (`check`): MLflow's client would otherwise retry for minutes, and a
server that is down would fail the job after training, not before.
"""

from __future__ import annotations

import fcntl
import json
import os
import urllib.error
import urllib.request
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator, Mapping

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from moirai_ft.artifacts import write_json_atomic
from moirai_ft.errors import UserError
from moirai_ft.train.trackers import job_params, plots, result_metrics, run_dir

try:  # the optional extra: imported when logger=mlflow is chosen
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
except ImportError:
    raise UserError('logger=mlflow needs MLflow: pip install "moirai-ft[mlflow]"') from None

STORE = "mlflow"  # in the run directory: mlflow.db and artifacts/
RUN_FILE = "mlflow_run.json"  # in the job directory: the job's run, continued by a resumed fit
PROBE_TIMEOUT_S = 10


def check(settings: Mapping[str, Any]) -> None:
    """A tracking server (http:// or https:// tracking_uri) that does not answer: one line (UserError)."""
    uri = str(settings.get("tracking_uri") or "")
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return  # it answered (behind a proxy or a login, /health may be refused): a server is there
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise UserError(f"no MLflow tracking server answers at logger.mlflow.tracking_uri={uri} ({reason}); "
                        "start it (mlflow server ...), or set logger.mlflow.tracking_uri=null for a store in "
                        "the run directory") from None


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when the process dies, too
        yield
    finally:
        os.close(fd)


class JobMLFlowLogger(MLFlowLogger):
    """MLFlowLogger that also records the job's result after its test evaluation."""

    @rank_zero_only
    def log_job_result(self, metrics: Mapping[str, Any], job_dir: Path) -> None:
        self.log_metrics(result_metrics(metrics), step=int(metrics.get("steps_run") or 0))
        for plot in plots(job_dir):
            self.experiment.log_artifact(self.run_id, str(plot))
        self.experiment.set_tag(self.run_id, "status", str(metrics.get("status")))


def mlflow_logger(
    job_dir: Path, resume_step: int | None, tracking_uri: str | None = None, experiment_name: str = "moirai-ft",
) -> MLFlowLogger:
    """The job's run (named after its directory) in `experiment_name`, on the local store or `tracking_uri`;
    a resumed fit continues the run of the attempt before it."""
    job_dir = Path(job_dir)
    store = run_dir(job_dir) / STORE
    artifacts = None
    if not tracking_uri:
        tracking_uri, artifacts = f"sqlite:///{store / 'mlflow.db'}", (store / "artifacts").as_uri()
    with _locked(store) if artifacts else nullcontext():
        client = MlflowClient(tracking_uri)  # creates the local store the first time
        previous = _previous_run(job_dir, client, tracking_uri) if rank_zero_only.rank == 0 else None
        if previous and resume_step is None:  # a restart from scratch (out of memory): its run starts again
            client.delete_run(previous)
            previous = None
        logger = JobMLFlowLogger(
            experiment_name=experiment_name, run_name=job_dir.name, tracking_uri=tracking_uri,
            artifact_location=artifacts, run_id=previous,
        )
        logger.log_hyperparams(job_params())  # creates the experiment and the run (rank 0 only)
    if rank_zero_only.rank == 0:
        write_json_atomic(job_dir / RUN_FILE, {"tracking_uri": tracking_uri, "run_id": logger.run_id})
    return logger


def _previous_run(job_dir: Path, client: MlflowClient, tracking_uri: str) -> str | None:
    """The run an earlier attempt of this job started in the same store, if it is still there."""
    try:
        saved = json.loads((job_dir / RUN_FILE).read_text())
        if saved["tracking_uri"] != tracking_uri:
            return None
        return client.get_run(saved["run_id"]).info.run_id
    except (OSError, ValueError, KeyError, TypeError, MlflowException):
        return None
