"""Fine-tune Moirai: `python train.py model=small pattern=freeze_ffn lr=1e-5`, or a grid with `-m`.

Composes conf/train.yaml, runs one job into Hydra's job directory, and returns the best validation
loss, the value a sweeper minimises.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

# third-party deprecation noise (uni2ts registering resolvers under omegaconf 2.4, hydra's version_base
# conversion) would bury the one line a user needs to read
warnings.filterwarnings("ignore", message=".*register_new_resolver.*")
warnings.filterwarnings("ignore", category=FutureWarning, module=r"hydra\..*")

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import moirai_ft.config.schema  # noqa: F401  (registers the group schemas before composing)
from moirai_ft.config.precheck import check_command_line
from moirai_ft.sweep import tracking as sweep


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from moirai_ft.train.job import objective  # here: torch loads only once the command line is checked

    hc = HydraConfig.get()
    # lock + fingerprint; in a sweep, skips a completed twin or continues an unfinished one (moirai_ft/sweep/tracking.py)
    try:
        metrics = sweep.run_tracked(
            cfg, hc.mode, Path(hc.runtime.output_dir), Path(hc.runtime.cwd), hc.runtime.choices.get("sweep")
        )
    except OSError as e:  # the disk filled or the directory went away: not even metrics.json could be written
        print(f"error: cannot write the job's files in {hc.runtime.output_dir} ({e.strerror or e}); "
              "free disk space or pass another hydra.run.dir / hydra.sweep.dir", file=sys.stderr)
        sys.exit(1)
    if metrics["status"] not in ("completed", "pruned"):  # pruned: a result (moirai_ft/search/prune.py)
        print(f"error: {metrics.get('error', metrics['status'])}", file=sys.stderr)
        if hc.mode != RunMode.MULTIRUN:  # in a sweep the other jobs go on
            sys.exit(2 if metrics.get("error_type") == "config" else 1)
    return objective(metrics)


if __name__ == "__main__":
    # a wrong key, type or value: one line before any directory, data or model (moirai_ft/config/precheck.py)
    if message := check_command_line(sys.argv[1:], Path(__file__).parent / "conf"):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    main()
    sys.exit(sweep.exit_code())  # a sweep with a failed job ends non-zero, after all its jobs ran
