"""logger=wandb: Lightning's WandbLogger, offline by default: the run's files go to `<job dir>/wandb/`, nothing
reaches the network, and `wandb sync <job dir>/wandb/offline-run-*` uploads them later.

Every attempt of a job is its own W&B run (a resumed fit starts a new one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from moirai_ft.errors import UserError
from moirai_ft.train.trackers import job_params, plots, result_metrics

try:  # the optional extra: imported when logger=wandb is chosen
    import wandb
except ImportError:
    raise UserError('logger=wandb needs Weights & Biases: pip install "moirai-ft[wandb]"') from None


class JobWandbLogger(WandbLogger):
    """WandbLogger that also records the job's result, then ends the run: a sweep's next job in this
    process starts its own (wandb.init would hand it this one otherwise)."""

    @rank_zero_only
    def log_job_result(self, metrics: Mapping[str, Any], job_dir: Path) -> None:
        run = self.experiment
        run.summary.update(result_metrics(metrics))
        run.summary["status"] = str(metrics.get("status"))
        images = {plot.stem: wandb.Image(str(plot)) for plot in plots(job_dir)}
        if images:
            run.log(images)
        run.finish()

    def finalize(self, status: str) -> None:
        super().finalize(status)
        if status == "failed" and self._experiment is not None:  # the job ends here, without a result
            self._experiment.finish(exit_code=1)


def wandb_logger(job_dir: Path, resume_step: int | None, offline: bool = True, project: str = "moirai-ft") -> WandbLogger:
    job_dir = Path(job_dir)
    if wandb.run is not None:  # an earlier job of this process stopped before log_job_result
        wandb.finish(exit_code=1)
    mode = {"mode": "offline"} if offline else {}  # wandb.init's own switch (Lightning's `offline` sets WANDB_MODE for the process)
    logger = JobWandbLogger(name=job_dir.name, save_dir=str(job_dir), project=project, **mode)
    logger.log_hyperparams(job_params())  # starts the run (rank 0 only)
    return logger
