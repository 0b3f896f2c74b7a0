"""What a job prints, for a terminal and for a file (a SLURM .out, a CI log, `| tee`).

A terminal gets live progress bars; anything else gets plain progress lines (moirai_ft/train/progress.py),
since a redrawn bar written to a file is one carriage-return frame per refresh. Third-party hints that
never apply to a moirai-ft job are dropped here, in one place, without touching the libraries.
Torch-free: train.py calls `quiet_third_party` before anything heavy is imported.
"""

from __future__ import annotations

import logging
import sys
import warnings

# Lightning's hints that do not apply to a moirai-ft job:
# - the SLURM environment check warns whenever `srun` is on PATH and this process was not started by it;
#   a job on a login node, a laptop with SLURM's client tools, or hardware=ddp (which starts its own
#   ranks) is not meant to be started by srun, and a SLURM sweep's jobs are (hydra/launcher=slurm)
# - advertisements for Lightning's hosted services, printed with every Trainer
# - that checkpoints/ is not empty: it holds best/ (written at the zero-shot check, before Lightning's checkpoint
#   callback sets up) and last.ckpt on a resume, both meant to be there
_LIGHTNING_WARNINGS = (r"The `srun` command is available on your system but is not used",
                       r"Checkpoint directory .* exists and is not empty")
# MLflow's SQL store on SQLAlchemy 2.1 (installed with optuna) warns about its own mapper options (logger=mlflow)
_OTHER_WARNINGS = (r".*``noload`` loader strategy.*",)
_LIGHTNING_INFO = ("💡 Tip:",)
_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def is_terminal(stream=None) -> bool:
    """True when progress goes to a terminal (tqdm and Lightning's bars write to stderr)."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


class _DropHints(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_LIGHTNING_INFO)


_DROP_HINTS = _DropHints()


def quiet_third_party() -> None:
    """Silence the hints above; idempotent (tests and every job of a sweep call it)."""
    for message in (*_LIGHTNING_WARNINGS, *_OTHER_WARNINGS):
        warnings.filterwarnings("ignore", message=message)
    for name in _RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if _DROP_HINTS not in logger.filters:
            logger.addFilter(_DROP_HINTS)
    # Optuna's study and trial INFO lines (a job joining its sweep's study, the optuna sweeper), once imported
    # (moirai_ft/search/prune.py): importing it here would slow train.py's start
    if "optuna" in sys.modules:
        sys.modules["optuna"].logging.set_verbosity(logging.WARNING)
