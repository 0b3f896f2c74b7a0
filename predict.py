"""Forecast with a finished job: `python predict.py job=<job dir | sweep dir> [data.path=<new file>]`.

A sweep directory (or a root above several) means the job analyze.py ranks first (rank_by=, its --metric).
The data options are the job's own, with the data.* given here on top. Writes forecasts.csv (or .parquet,
format=parquet), forecast.png and prediction.json into out= (default: a new directory under the job's
predictions/). future.path=<file> gives the known covariates over the horizon; zero_shot=true forecasts
with the job's starting model; backtest=<date> forecasts from that date and scores the forecast against
the data's values with the job's metrics. A wrong setting or unusable data is one `error:` line, exit 2,
before any model loads where the input alone shows it, and no forecast file (moirai_ft/forecast/cli.py).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

# third-party deprecation noise would bury the one line a user needs to read (as in train.py)
warnings.filterwarnings("ignore", message=".*register_new_resolver.*")
warnings.filterwarnings("ignore", category=FutureWarning, module=r"hydra\..*")

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from moirai_ft.config.precheck import check_command_line
from moirai_ft.config.predict import validate_predict
from moirai_ft.config.store import register
from moirai_ft.errors import UserError
from moirai_ft.forecast.cli import data_overrides, run


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg, data_overrides(cfg, list(HydraConfig.get().overrides.task)))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    register()  # the schemas conf/predict.yaml composes against (moirai_ft/config/store.py)
    # a wrong key, type or value: one line before anything loads (moirai_ft/config/precheck.py)
    if message := check_command_line(sys.argv[1:], Path(__file__).parent / "conf", "predict", validate_predict):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    main()
