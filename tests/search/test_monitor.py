"""monitor=val_nll|val_crps|val_mae: the monitored value selects the best check and stops early
(moirai_ft/search/monitor.py, BestWeights), and a job records it in its history and metrics."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import compose_cfg
from moirai_ft.model.load import load_module
from moirai_ft.train.callbacks import BestWeights
from moirai_ft.train.job import run
from moirai_ft.train.outcome import objective

# one value per validation check, the zero-shot check first: the NLL keeps falling (a sharper, overconfident
# distribution) while the forecast's CRPS is best at the second check and worsens after it
NLL = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]
CRPS = [0.5, 0.4, 0.45, 0.5, 0.55, 0.6]


class Scripted(L.LightningModule):
    """A real Lightning module whose validation checks report scripted values."""

    def __init__(self, module: torch.nn.Module, nll: list[float] = NLL, crps: list[float] = CRPS):
        super().__init__()
        self.module = module
        self.nll, self.crps = nll, crps
        self.check = 0

    def training_step(self, batch, batch_idx):
        return sum(p.sum() for p in self.module.parameters()) * 0.0  # lr 0: the weights stay

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        i = min(self.check, len(self.nll) - 1)
        self.log("val/loss", self.nll[i])
        self.log("val/crps", self.crps[i])
        self.check += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.module.parameters(), lr=0.0)


def select(tmp_path: Path, key: str, nll: list[float] = NLL, crps: list[float] = CRPS, patience: int = 2,
           more: list[L.Callback] = ()) -> BestWeights:
    """Runs the scripted checks (zero-shot first) through a real Trainer with BestWeights on `key`."""
    module = Scripted(load_module(compose_cfg().model), nll, crps)
    best = BestWeights(tmp_path / key.replace("/", "_"), patience=patience, monitor_key=key)
    trainer = L.Trainer(max_epochs=len(nll) - 1, callbacks=[best, *more], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        accelerator="cpu", limit_train_batches=1)
    data = torch.utils.data.DataLoader(torch.zeros(1, 1))
    trainer.validate(module, data, verbose=False)
    trainer.fit(module, data, data)
    return best


def test_val_crps_selects_another_check_than_val_nll_and_stops_early_on_it(tmp_path: Path):
    by_nll, by_crps = select(tmp_path, "val/loss"), select(tmp_path, "val/crps")
    assert by_nll.best_step == len(NLL) - 1 and by_nll.stop_reason is None  # ran to the end, last check best
    assert by_crps.best_step == 1 and by_crps.best_value == pytest.approx(min(CRPS))
    assert by_crps.stop_reason == "early_stopping" and by_crps.checks == 1 + 1 + 2  # zero-shot, best, patience 2
    assert by_crps.best_val_loss == pytest.approx(NLL[1]) and by_crps.zero_shot_value == pytest.approx(CRPS[0])


def test_a_job_monitoring_val_crps_records_it_in_history_and_metrics(tmp_path: Path):
    cfg = compose_cfg(["monitor=val_crps", "monitor_samples=8", "epochs=2", "val_check_interval=3",
                       "eval.num_samples=8", "eval.plot_windows=0"])
    metrics = run(cfg, tmp_path)
    assert metrics["status"] == "completed", metrics.get("error")
    with (tmp_path / "training_history.csv").open() as f:
        rows = list(csv.DictReader(f))
    crps = [float(r["val_crps"]) for r in rows]
    assert rows[0]["epoch"] == "-1" and len(rows) == 5 and all(math.isfinite(v) and v > 0 for v in crps)
    assert metrics["monitor"] == "val_crps"
    assert metrics["zero_shot_monitored"] == pytest.approx(crps[0])
    assert metrics["best_monitored"] == pytest.approx(min(crps))
    best_row = rows[crps.index(min(crps))]
    assert metrics["best_step"] == int(best_row["step"])
    assert objective(metrics) == metrics["best_monitored"]
    # the zero-shot check's forecast metric is the test's WQL definition on validation windows: the
    # zero-shot model scored twice with the same seed gives the same value
    assert metrics["rel_improvement_ci"].keys() == metrics["test"].keys() - {"val_nll", "coverage_80"}


@pytest.mark.parametrize("override", ["monitor=val_loss", "monitor_samples=0"])
def test_monitor_settings_are_checked_before_training(override: str):
    from moirai_ft.config.schema import validate
    from moirai_ft.errors import UserError

    with pytest.raises(UserError, match=override.split("=")[0]):
        validate(compose_cfg([override]))


# a monitor added by config alone: a conf/monitors file of the user's own, on hydra.searchpath, that extends
# the shipped registry with a forecast monitor of the test's RMSE (a metric of moirai_ft/scores.py)
EXTRA_MONITORS = """\
defaults:
  - default
  - _self_
val_rmse:
  _target_: moirai_ft.search.monitor.ForecastMonitor
  metric: rmse
  key: val/rmse
  column: val_rmse
"""


def test_a_monitor_added_by_one_conf_file_selects_the_best_check(tmp_path: Path):
    conf = tmp_path / "conf" / "monitors"
    conf.mkdir(parents=True)
    (conf / "extra.yaml").write_text(EXTRA_MONITORS)
    cfg = compose_cfg([f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "monitors=extra", "monitor=val_rmse",
                       "monitor_samples=4", "epochs=1", "steps_per_epoch=2", "val_check_interval=1",
                       "eval.num_samples=4", "eval.max_windows=4", "eval.plot_windows=0"])
    metrics = run(cfg, tmp_path / "job")
    assert metrics["status"] == "completed", metrics.get("error")
    with (tmp_path / "job" / "training_history.csv").open() as f:
        rmse = [float(r["val_rmse"]) for r in csv.DictReader(f)]
    assert len(rmse) == 3 and all(math.isfinite(v) and v > 0 for v in rmse)  # zero-shot + 2 checks
    assert metrics["monitor"] == "val_rmse" and metrics["zero_shot_monitored"] == pytest.approx(rmse[0])
    assert metrics["best_monitored"] == pytest.approx(min(rmse)) and objective(metrics) == metrics["best_monitored"]


def test_a_misspelt_monitor_lists_the_registry_in_one_line():
    from moirai_ft.config.schema import validate
    from moirai_ft.errors import UserError

    with pytest.raises(UserError) as e:
        validate(compose_cfg(["monitor=val_crsp"]))
    assert str(e.value) == "monitor must be one of val_nll, val_crps, val_mae (got 'val_crsp')"
