"""Entry point of ranks 1..N-1 of a multi-process job (`python -m moirai_ft.train.rank <job_dir>`,
started by moirai_ft/train/distributed.py with the composed config on stdin). Its own module so that
distributed.py, which job.py imports, never imports job.py back."""

from __future__ import annotations

import logging
import pickle
import sys
from pathlib import Path

from moirai_ft.instrument import faults
from moirai_ft.train.distributed import global_rank
from moirai_ft.train.job import run


def main(argv: list[str]) -> int:
    """Entry point of ranks 1..N-1: the job from the config on stdin, into the same job directory."""
    (job_dir,) = argv
    rank = global_rank()
    logging.basicConfig(level=logging.WARNING, format=f"[rank {rank}][%(name)s][%(levelname)s] %(message)s")
    cfg = pickle.load(sys.stdin.buffer)
    metrics = run(cfg, Path(job_dir), faults.from_environment())  # armed by a test: as rank 0's
    # a config error is the same on every rank and rank 0 records it; anything else is this rank's failure
    return 1 if metrics["status"] == "failed" and metrics.get("error_type") != "config" else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
