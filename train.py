"""Fine-tune Moirai: `python train.py model=small pattern=freeze_ffn lr=1e-5`, or a grid with `-m`.

Composes conf/train.yaml, runs one job into Hydra's job directory, and returns the best validation
loss, the value a sweeper minimises.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import moirai_ft.config  # noqa: F401  (registers the group schemas before composing)
from moirai_ft.job import objective, run


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    metrics = run(cfg, Path(hc.runtime.output_dir))
    if metrics["status"] != "completed":
        print(f"error: {metrics.get('error', metrics['status'])}", file=sys.stderr)
        if hc.mode != RunMode.MULTIRUN:  # in a sweep the other jobs go on
            sys.exit(2 if metrics.get("error_type") == "config" else 1)
    return objective(metrics)


if __name__ == "__main__":
    main()
