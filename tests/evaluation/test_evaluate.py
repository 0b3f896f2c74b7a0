"""Every job is measured against its zero-shot model on the test windows; a finished job can be
re-evaluated from its directory. Real tiny jobs, real files, real uni2ts modules."""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from uni2ts.model.moirai import MoiraiModule

from conftest import compose_cfg
from moirai_ft.artifacts import BEST, CHECKPOINTS, HISTORY, METRICS
from moirai_ft.config.schema import validate
from moirai_ft.data.prepare import prepare
from moirai_ft.errors import UserError
from moirai_ft.evaluation.compare import EVAL_ERROR_LOG, FORECAST_PNG, evaluate_job, summary_line
from moirai_ft.evaluation.forecast import fingerprint
from moirai_ft.evaluation.reevaluate import main
from moirai_ft.evaluation.scoring import EvalItems, eval_items
from moirai_ft.model.families.moirai1 import horizon_distribution, horizon_tokens
from moirai_ft.model.families.moirai1 import MODEL_FIELDS
from moirai_ft.evaluation.plot import forecast_panels, plot_forecasts
from moirai_ft.train.job import run
from moirai_ft.scores import QUANTILE_LEVELS
from moirai_ft.model.load import random_module

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METRIC_NAMES = {"mse_norm", "mae_norm", "mae", "rmse", "mase", "wql", "val_nll"}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> tuple[Path, dict, list[str]]:
    """One tiny job as tests/conftest.py's TINY defines it (6 steps at lr 1e-3), and its log."""
    job_dir = tmp_path_factory.mktemp("job")
    records = _Records()
    logger = logging.getLogger("moirai_ft.train.outcome")  # the job's summary line
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        metrics = run(compose_cfg(), job_dir)
    finally:
        logger.removeHandler(records)
    return job_dir, metrics, records.messages


def _val_losses(job_dir: Path) -> list[float]:
    with (job_dir / HISTORY).open() as f:
        return [float(row["val_loss"]) for row in csv.DictReader(f)]


def test_job_reports_selected_model_against_zero_shot(job):
    job_dir, metrics, messages = job
    assert metrics["status"] == "completed", metrics.get("error")
    assert metrics["finetune_helped"], "precondition: the TINY job's training beats zero-shot on validation"
    test, zero, rel = metrics["test"], metrics["zero_shot_test"], metrics["rel_improvement"]
    assert set(test) == set(zero) == set(rel) | {"coverage_80"} and set(rel) == METRIC_NAMES
    assert all(math.isfinite(v) for v in [*test.values(), *zero.values()])
    # the fine-tuned weights forecast differently from the starting ones on the same windows
    assert all(test[k] != zero[k] for k in METRIC_NAMES)
    for k in METRIC_NAMES:
        assert rel[k] == pytest.approx((zero[k] - test[k]) / abs(zero[k]))
    # in a job the validation NLL is the training's (re-evaluation measures it again: see below)
    assert (test["val_nll"], zero["val_nll"]) == (metrics["best_val_loss"], metrics["zero_shot_val_loss"])
    # eval.max_windows evenly spaced windows of the split, or all of them
    cfg = compose_cfg()
    assert metrics["test_eval"]["series_windows"] == min(cfg.eval.max_windows, len(prepare(cfg).test))
    assert json.loads((job_dir / METRICS).read_text())["test"] == pytest.approx(test)
    summary = [m for m in messages if m.startswith("test (")]
    assert len(summary) == 1 and "vs zero-shot" in summary[0] and f"{test['mase']:.4g}" in summary[0]


def test_forecast_png_has_one_panel_per_window(job, tmp_path):
    job_dir, _, _ = job
    cfg = compose_cfg()
    data = prepare(cfg)
    n = len(data.test)
    items = EvalItems(*(a.numpy() for a in data.test.locate(torch.arange(n))))
    quantiles = np.sort(np.random.default_rng(0).standard_normal((n, len(QUANTILE_LEVELS), cfg.prediction_length)), axis=1)
    for count in (1, 3):
        path = tmp_path / f"{count}.png"
        fig = plot_forecasts(forecast_panels(data, items, {"zero-shot": quantiles, "fine-tuned": quantiles + 1}, count), path)
        assert len(fig.axes) == count
        assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert forecast_panels(data, items, {"zero-shot": quantiles}, 0) == []
    # the job's picture: a real PNG with the size of eval.plot_windows panels
    png = job_dir / FORECAST_PNG
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    expected = tmp_path / "expected.png"
    plot_forecasts(forecast_panels(data, items, {"zero-shot": quantiles}, cfg.eval.plot_windows), expected)
    assert imread(png).shape == imread(expected).shape


def test_worse_validation_selects_zero_shot_with_identical_test_metrics(tmp_path):
    """lr=0.1 wrecks the tiny model in 6 steps: the job keeps the zero-shot weights, so its test
    metrics must be the zero-shot ones exactly and every improvement 0 (zero effective training)."""
    metrics = run(compose_cfg(["lr=0.1"]), tmp_path)
    assert metrics["status"] == "completed", metrics.get("error")
    zero_shot_val, *trained_val = _val_losses(tmp_path)
    assert trained_val and all(v > zero_shot_val for v in trained_val), "precondition: training made validation worse"
    assert metrics["finetune_helped"] is False and metrics["best_step"] == 0
    selected = MoiraiModule.from_pretrained(str(tmp_path / CHECKPOINTS / BEST))
    assert fingerprint(selected) == metrics["zero_shot_fingerprint"]
    assert metrics["test"] == metrics["zero_shot_test"]
    assert metrics["rel_improvement"] == {k: 0.0 for k in METRIC_NAMES}


def test_reevaluation_reproduces_the_stored_test_metrics(job, tmp_path):
    src, stored, _ = job
    job_dir = tmp_path / "job"
    shutil.copytree(src, job_dir)
    (job_dir / FORECAST_PNG).unlink()
    assert main([str(job_dir)]) == 0
    again = json.loads((job_dir / METRICS).read_text())
    for key in ("test", "zero_shot_test"):
        # the NLL is measured again on the validation windows from the rebuilt zero-shot model and
        # checkpoints/best: equal to the training's up to float32 summation order
        assert again[key].pop("val_nll") == pytest.approx(stored[key]["val_nll"], rel=1e-5)
        assert again[key] == pytest.approx({k: v for k, v in stored[key].items() if k != "val_nll"}, rel=1e-9)
    assert again["best_val_loss"] == stored["best_val_loss"]  # the training's keys are kept
    assert (job_dir / FORECAST_PNG).read_bytes()[:8] == PNG_SIGNATURE
    # it recomputes rather than copying: other settings give other numbers
    assert main([str(job_dir), "eval.num_samples=20", "eval.max_windows=8"]) == 0
    other = json.loads((job_dir / METRICS).read_text())
    assert (other["test_eval"]["num_samples"], other["test_eval"]["windows"]) == (20, 8)
    assert other["test"]["wql"] != stored["test"]["wql"]


def test_coverage_blend_and_calibration_of_a_finished_job(job, tmp_path):
    """Every evaluation records both models' 80% band coverage; blend=true and calibrate=conformal add the
    blend (its weight from validation, its intervals against each part) and the calibrated bands, and
    re-evaluating without them takes their keys and calibration.json away again."""
    src, stored, _ = job
    for key in ("test", "zero_shot_test"):
        assert 0.0 <= stored[key]["coverage_80"] <= 1.0
    assert "coverage_80" not in stored["rel_improvement"] and "coverage_80" not in stored["rel_improvement_ci"]
    job_dir = tmp_path / "job"
    shutil.copytree(src, job_dir)
    assert main([str(job_dir), "blend=true", "calibrate=conformal", "eval.plot_windows=0"]) == 0
    m = json.loads((job_dir / METRICS).read_text())
    w, scores = m["blend_weight"], m["blend_validation"]["scores"]
    assert m["blend_validation"]["metric"] == "wql"  # monitor=val_nll: the blend is chosen by WQL
    assert scores[f"{w:g}"] == min(scores.values()) and set(scores) == {"0", "0.25", "0.5", "0.75", "1"}
    ends = {1.0: "test", 0.0: "zero_shot_test"}
    if w in ends:  # the blend at an end of the grid is that model's forecast: its metrics exactly
        assert m["test_blend"] == {k: v for k, v in m[ends[w]].items() if k != "val_nll"}
    for part in ("vs_fine_tuned", "vs_zero_shot"):
        lo, hi = m["blend_ci"][part]["wql"]
        assert lo <= m["blend_rel_improvement"][part]["wql"] <= hi
    summary = m["calibration"]["fine-tuned"]
    assert summary["test"]["coverage_80_before"] == m["test"]["coverage_80"]
    assert summary["test"]["coverage_80_after"] == m["test_calibrated"]["coverage_80"]
    assert summary["validation"]["coverage_80_after"] >= 0.8 > summary["validation"]["coverage_80_before"]
    assert "test_blend_calibrated" in m and (job_dir / "calibration.json").is_file()
    line = summary_line(m)  # the job's last line says it too
    assert "80% band holds" in line and "calibrated" in line and f"blend w={w:g} wql" in line
    assert main([str(job_dir), "eval.plot_windows=0"]) == 0
    plain = json.loads((job_dir / METRICS).read_text())
    assert not {"blend_weight", "test_blend", "blend_ci", "test_calibrated", "calibration"} & set(plain)
    assert not (job_dir / "calibration.json").exists()


def test_reevaluation_refuses_what_it_cannot_reproduce(job, tmp_path, capsys):
    job_dir, _, _ = job
    # another seed initialises another random model: not the one the job started from
    assert main([str(job_dir), "seed=1"]) == 2
    assert "is not the one" in capsys.readouterr().err
    assert main([str(job_dir), "eval.num_sample=5"]) == 2
    assert "unknown config key" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "no config.yaml" in capsys.readouterr().err


def test_a_failed_evaluation_is_recorded_and_the_job_goes_on(tmp_path):
    cfg = compose_cfg()
    out = evaluate_job(cfg, prepare(cfg), random_module(cfg.model), tmp_path)  # no checkpoints/best here
    assert set(out) == {"test_error"} and "holds no selected weights" in out["test_error"]
    assert "Traceback" in (tmp_path / EVAL_ERROR_LOG).read_text()
    assert summary_line(out).startswith("test: no evaluation")


@pytest.mark.parametrize("mode", ["S", "M"])
def test_horizon_distribution_is_the_models_distribution_on_the_horizon(mode):
    cfg = compose_cfg([f"data.mode={mode}"])
    data = prepare(cfg)
    torch.manual_seed(0)
    module = random_module(cfg.model).eval()
    batch = data.test.batch(torch.arange(min(8, len(data.test))))
    tokens = horizon_tokens(data.test, torch.device("cpu"))
    assert batch["prediction_mask"][0, tokens].all() and int(batch["prediction_mask"][0].sum()) == len(tokens)
    p = cfg.patch_size
    with torch.no_grad():
        full = module(**{k: batch[k] for k in MODEL_FIELDS}).log_prob(batch["target"])
        horizon = horizon_distribution(module, batch, tokens, p).log_prob(batch["target"][:, tokens, :p])
    torch.testing.assert_close(horizon, full[:, tokens, :p])


@pytest.mark.parametrize("mode", ["S", "M"])
def test_items_follow_the_window_layout(mode):
    """Item i's (column, start) must address the values forecast_quantiles puts at row i."""
    cfg = compose_cfg([f"data.mode={mode}"])
    data = prepare(cfg)
    ids = torch.arange(0, len(data.test), 3)
    items = eval_items(data.test, ids)
    rows = items.starts[:, None] + np.arange(cfg.prediction_length)
    horizon = data.test.raw(ids)[..., cfg.context_length :].reshape(-1, cfg.prediction_length)
    np.testing.assert_array_equal(data.normalized[rows, items.columns[:, None]], horizon.numpy())


@pytest.mark.parametrize("override", ["eval.num_samples=0", "eval.max_windows=0", "eval.batch_size=0", "eval.plot_windows=-1"])
def test_eval_settings_are_checked_before_training(override):
    key = override.split("=")[0]
    with pytest.raises(UserError, match=key):
        validate(compose_cfg([override]))
    validate(compose_cfg(["eval.max_windows=null", "eval.plot_windows=0"]))
