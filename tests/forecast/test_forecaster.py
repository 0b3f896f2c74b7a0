"""moirai_ft.Forecaster forecasts as each family's uni2ts forecast class does with the job's weights, in
original units; a backtest reproduces the job's own test metrics; known covariates come from the same
frame or a future file. Real tiny jobs (trained once per module), real uni2ts classes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from uni2ts.model.moirai import MoiraiForecast, MoiraiModule
from uni2ts.model.moirai2 import Moirai2Forecast, Moirai2Module
from uni2ts.model.moirai_moe import MoiraiMoEForecast, MoiraiMoEModule

from conftest import compose_cfg
from moirai_ft import Forecaster
from moirai_ft.analysis.report import analyze
from moirai_ft.data.synthetic import building_plant, building_telemetry
from moirai_ft.errors import UserError
from moirai_ft.evaluation.reevaluate import main as reevaluate_main
from moirai_ft.model.family import sample_quantiles
from moirai_ft.forecast.forecaster import LEVEL_COLUMNS
from moirai_ft.train.job import run

# one test window per column (eval_stride past the test split's end): the backtest at the test split's start
# scores exactly the windows the job scored
SMALL = ["data.eval_stride=100000", "eval.max_windows=8", "val_max_windows=8"]
MODULES = {"tiny": MoiraiModule, "tiny_moirai2": Moirai2Module, "tiny_moe": MoiraiMoEModule}


def _job(root: Path, name: str, overrides: list[str]) -> Path:
    job_dir = root / name
    metrics = run(compose_cfg(SMALL + overrides), job_dir)
    assert metrics["status"] == "completed", metrics.get("error")
    return job_dir


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sweep")


@pytest.fixture(scope="module")
def v1(root) -> Path:  # Moirai 1.x; 1000 paths so the quantiles of two independent draws agree closely
    return _job(root, "v1", ["eval.num_samples=1000"])


@pytest.fixture(scope="module")
def v2_lora(root) -> Path:  # Moirai 2.0 fine-tuned with LoRA: checkpoints/best holds the merged weights
    return _job(root, "v2_lora", ["model=tiny_moirai2", "pattern=lora", "lr=5e-2"])


@pytest.fixture(scope="module")
def moe(root) -> Path:
    return _job(root, "moe", ["model=tiny_moe", "eval.num_samples=50"])


def _frame(job_dir: Path) -> pd.DataFrame:
    """The job's embedded data as a user's DataFrame (timestamps in the index)."""
    cfg = compose_cfg()
    return building_telemetry(cfg.data.num_columns, cfg.data.num_days, seed=cfg.seed)


def _stats(job_dir: Path) -> dict:
    return json.loads((job_dir / "normalization.json").read_text())


def _theirs(model: str, job_dir: Path, context: np.ndarray, is_pad: np.ndarray | None = None, num_samples: int = 100,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """(quantiles (item, level, pred), mean or None) of the family's uni2ts forecast class with the job's weights,
    one series per item, `context` (item, ctx) on the job's normalised scale."""
    cfg = compose_cfg([f"model={model}"])
    module = MODULES[model].from_pretrained(str(job_dir / "checkpoints" / "best")).eval()
    x = torch.tensor(np.nan_to_num(context), dtype=torch.float32)[..., None]
    observed = torch.tensor(~np.isnan(context))[..., None]
    pad = torch.zeros(x.shape[:2], dtype=torch.bool) if is_pad is None else torch.tensor(is_pad)
    kw = dict(prediction_length=cfg.prediction_length, target_dim=1, feat_dynamic_real_dim=0,
              past_feat_dynamic_real_dim=0, context_length=cfg.context_length, module=module)
    torch.manual_seed(seed)
    with torch.no_grad():
        if model == "tiny_moirai2":
            return Moirai2Forecast(**kw)(x, observed, pad).numpy(), None
        cls = MoiraiForecast if model == "tiny" else MoiraiMoEForecast
        paths = cls(**kw, patch_size=cfg.patch_size, num_samples=num_samples)(x, observed, pad)  # (item, sample, pred)
    return sample_quantiles(paths.transpose(0, 1)).transpose(0, 1).numpy(), paths.mean(1).numpy()


def _ours(frame: pd.DataFrame, items: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """forecasts.csv's rows back as (item, level, pred) and (item, pred)."""
    assert list(frame["item"].unique()) == items
    q = np.stack([frame[frame["item"] == i][list(LEVEL_COLUMNS)].to_numpy().T for i in items])
    mean = np.stack([frame[frame["item"] == i]["mean"].to_numpy() for i in items]) if "mean" in frame else None
    return q, mean


def _original(q: np.ndarray, stats: dict, columns: list[int]) -> np.ndarray:
    mean, std = np.asarray(stats["mean"])[columns], np.asarray(stats["std"])[columns]
    shape = (-1,) + (1,) * (q.ndim - 1)
    return q * std.reshape(shape) + mean.reshape(shape)


@pytest.mark.parametrize("family", ["v1", "v2_lora", "moe"])
def test_predict_is_the_families_uni2ts_forecast_class_in_original_units(family, request) -> None:
    job_dir = request.getfixturevalue(family)
    model = {"v1": "tiny", "v2_lora": "tiny_moirai2", "moe": "tiny_moe"}[family]
    cfg = compose_cfg([f"model={model}"])
    df = _frame(job_dir)
    forecaster = Forecaster.from_job(job_dir)
    out = forecaster.predict(df)
    stats = _stats(job_dir)
    items = stats["columns"]
    assert len(out) == len(items) * cfg.prediction_length
    horizon = pd.date_range(df.index[-1], periods=cfg.prediction_length + 1, freq="15min")[1:]
    assert (pd.DatetimeIndex(out["timestamp"].iloc[: cfg.prediction_length]) == horizon).all()
    assert ("mean" in out) == (model != "tiny_moirai2")  # 2.0 forecasts quantiles, no paths
    ours, our_mean = _ours(out, items)

    context = ((df[items].to_numpy(np.float32)[-cfg.context_length:] - np.float32(stats["mean"]))
               / np.float32(stats["std"])).T
    num_samples = int(forecaster.job.config.eval.num_samples)
    cols = list(range(len(items)))
    if model == "tiny":
        # MoiraiForecast samples every token at the largest patch, moirai-ft the horizon's only: other draws of
        # the same distribution. Ours is as far from two draws of MoiraiForecast as they are from each other
        draws = [_theirs(model, job_dir, context, num_samples=num_samples, seed=s) for s in (1, 2)]
        q = [_original(d[0], stats, cols) for d in draws]
        m = [_original(d[1], stats, cols) for d in draws]
        for ours_x, (a, b) in ((ours, q), (our_mean, m)):
            noise = np.abs(a - b).mean()
            assert np.abs(ours_x - a).mean() < 1.5 * noise and np.abs(ours_x - b).mean() < 1.5 * noise
        assert np.abs(ours - draws[0][0]).mean() > 10 * np.abs(q[0] - q[1]).mean()  # normalised is far off
    else:  # the forecast class itself, the same seed: the same numbers
        theirs, their_mean = _theirs(model, job_dir, context, num_samples=num_samples)
        np.testing.assert_allclose(ours, _original(theirs, stats, cols), rtol=1e-5, atol=1e-4)
        if their_mean is not None:
            np.testing.assert_allclose(our_mean, _original(their_mean, stats, cols), rtol=1e-5, atol=1e-4)
    # loaded once: a second frame reuses the module
    module = forecaster.module
    again = forecaster.predict(df.iloc[:-10])
    assert forecaster.module is module and again["timestamp"].iloc[0] == df.index[-10]


def test_mode_m_forecasts_every_target_in_one_sample(v2_lora) -> None:
    """data.mode=M: the three targets as one multivariate sample, the forecast class's target_dim=3."""
    cfg = compose_cfg(["model=tiny_moirai2"])
    df = _frame(v2_lora)
    out = Forecaster.from_job(v2_lora, data={"mode": "M"}).predict(df)
    stats = _stats(v2_lora)
    items = stats["columns"]
    context = ((df[items].to_numpy(np.float32)[-cfg.context_length:] - np.float32(stats["mean"])) / np.float32(stats["std"]))
    module = Moirai2Module.from_pretrained(str(v2_lora / "checkpoints" / "best")).eval()
    forecast = Moirai2Forecast(prediction_length=cfg.prediction_length, target_dim=len(items), feat_dynamic_real_dim=0,
                               past_feat_dynamic_real_dim=0, context_length=cfg.context_length, module=module)
    x = torch.tensor(context)[None]
    with torch.no_grad():
        theirs = forecast(x, torch.ones_like(x, dtype=torch.bool), torch.zeros(x.shape[:2], dtype=torch.bool))
    theirs = theirs[0].permute(2, 0, 1).numpy()  # (level, pred, target) -> (target, level, pred)
    ours = _ours(out, items)[0]
    np.testing.assert_allclose(ours, _original(theirs, stats, list(range(len(items)))), rtol=1e-5, atol=1e-4)
    assert not np.allclose(ours, _ours(Forecaster.from_job(v2_lora).predict(df), items)[0])  # S is another question


def test_a_short_context_is_padded_as_uni2ts_pads_it(v2_lora) -> None:
    cfg = compose_cfg(["model=tiny_moirai2"])
    df = _frame(v2_lora).iloc[: cfg.context_length - 24]  # 40 rows, 64 wanted
    out = Forecaster.from_job(v2_lora).predict(df)
    assert any("context padded" in n for n in out.attrs["notes"])
    stats = _stats(v2_lora)
    items = stats["columns"]
    ctx = np.full((len(items), cfg.context_length), np.nan, dtype=np.float32)
    ctx[:, 24:] = ((df[items].to_numpy(np.float32) - np.float32(stats["mean"])) / np.float32(stats["std"])).T
    pad = np.zeros(ctx.shape, dtype=bool)
    pad[:, :24] = True  # gluonts's InstanceSplitter: past_is_pad over the missing start
    theirs, _ = _theirs("tiny_moirai2", v2_lora, ctx, pad)
    np.testing.assert_allclose(_ours(out, items)[0], _original(theirs, stats, list(range(len(items)))),
                               rtol=1e-5, atol=1e-4)
    with pytest.raises(UserError, match="at least one patch of context") as e:
        Forecaster.from_job(v2_lora).predict(df.iloc[: cfg.patch_size - 1])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("zero_shot", [False, True])
def test_backtest_at_the_test_split_start_reproduces_the_jobs_test_metrics(v1, zero_shot) -> None:
    metrics = json.loads((v1 / "metrics.json").read_text())
    test_start = _stats(v1)["test_start"]
    assert metrics["test_eval"]["series_windows"] == 3  # one window per column, from the test split's start
    forecaster = Forecaster.from_job(v1, zero_shot=zero_shot)
    out = forecaster.predict(_frame(v1), backtest=test_start)
    assert str(out["timestamp"].iloc[0]) == test_start
    expected = metrics["zero_shot_test" if zero_shot else "test"]
    got = out.attrs["metrics"]
    assert {"mse_norm", "mae_norm", "mae", "rmse", "mase", "wql"} <= set(got) <= set(expected)
    for key, value in got.items():
        assert value == pytest.approx(expected[key], rel=1e-6), key


def test_the_blend_and_the_calibration_forecast_as_the_job_scored_them(v1, tmp_path) -> None:
    """predict(..., blend=True) and the job's calibration.json: a backtest on the job's own test windows gives
    the metrics the job recorded for its blend and its calibrated bands."""
    job_dir = tmp_path / "v1"
    shutil.copytree(v1, job_dir)
    with pytest.raises(UserError, match=r"ran without blend=true.*python -m moirai_ft.evaluate .* blend=true") as e:
        Forecaster.from_job(job_dir, load=False).predict(_frame(v1), blend=True)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="drop zero_shot"):
        Forecaster.from_job(job_dir, zero_shot=True, load=False).predict(_frame(v1), blend=True)
    from conftest import CONF
    from moirai_ft.config.precheck import check_command_line
    from moirai_ft.config.predict import validate_predict
    said = check_command_line([f"job={job_dir}", "blend=true", "zero_shot=true"], CONF, "predict", validate_predict)
    assert said.endswith("drop zero_shot=true")
    assert reevaluate_main([str(job_dir), "blend=true", "calibrate=conformal", "eval.plot_windows=0"]) == 0
    metrics = json.loads((job_dir / "metrics.json").read_text())
    forecaster = Forecaster.from_job(job_dir)
    test_start = _stats(job_dir)["test_start"]
    for kwargs, key in (({"blend": True}, "test_blend_calibrated"), ({"blend": True, "calibrated": False}, "test_blend"),
                        ({}, "test_calibrated"), ({"calibrated": False}, "test")):
        out = forecaster.predict(_frame(v1), backtest=test_start, **kwargs)
        for name, value in out.attrs["metrics"].items():
            assert value == pytest.approx(metrics[key][name], rel=1e-6), (key, name)
        assert any("calibrated" in n for n in out.attrs["notes"]) == kwargs.get("calibrated", True)
    assert metrics["calibration"]["fine-tuned"]["test"]["coverage_80_after"] == metrics["test_calibrated"]["coverage_80"]


def test_a_sweep_means_the_job_analyze_ranks_first(root, v1, v2_lora, moe) -> None:
    for metric in ("best_val_loss", "test.mase"):
        first = next(j for j in analyze(root, metric).jobs if j.state.value == "completed").path
        forecaster = Forecaster.from_job(root, rank_by=metric, load=False)
        assert forecaster.job.path == first and forecaster.module is None
    ranked = sorted((json.loads((d / "metrics.json").read_text())["test"]["mase"], d) for d in (v1, v2_lora, moe))
    assert Forecaster.from_job(root, rank_by="test.mase", load=False).job.path == ranked[0][1]


# --- known covariates ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def covariates(tmp_path_factory) -> Path:
    return _job(tmp_path_factory.mktemp("cov"), "building", ["data=building", "data.num_days=30", "eval.num_samples=20"])


def test_known_covariates_come_from_the_rows_after_the_targets_or_a_future_file(covariates, tmp_path) -> None:
    cfg = compose_cfg(["data=building", "data.num_days=30"])
    plant = building_plant(30, seed=0, num_sensors=cfg.data.num_columns)
    forecaster = Forecaster.from_job(covariates)
    targets, known = forecaster.job.targets, forecaster.job.known
    assert known == ["outdoor_temp", "occupied"] and forecaster.job.past
    pred = cfg.prediction_length
    # the weather forecast and the schedule written into the rows after the targets' last value
    same_file = plant.copy()
    same_file.iloc[-pred:, [plant.columns.get_loc(c) for c in targets]] = np.nan
    a = forecaster.predict(same_file)
    assert a["timestamp"].iloc[0] == plant.index[-pred] and list(a["item"].unique()) == targets
    # past covariates need only their history: what the rows after say of them is not read
    later = same_file.copy()
    later.iloc[-pred:, [plant.columns.get_loc(c) for c in forecaster.job.past]] = 1e6
    pd.testing.assert_frame_equal(forecaster.predict(later), a)
    # the same values from a future file
    history = plant.iloc[:-pred]
    future = plant.iloc[-pred:][known]
    future.rename_axis("timestamp").reset_index().to_csv(tmp_path / "future.csv", index=False)
    b = forecaster.predict(history, future=tmp_path / "future.csv")
    pd.testing.assert_frame_equal(a, b)
    # without them: one line naming the covariate and both ways to give it
    with pytest.raises(UserError, match="known covariate 'outdoor_temp' has no value at 16 of the 16") as e:
        forecaster.predict(history)
    assert "\n" not in str(e.value) and "future.path" in str(e.value)
    # the covariates matter: other weather, another forecast
    warmer = future.assign(outdoor_temp=future["outdoor_temp"] + 15)
    c = forecaster.predict(history, future=warmer)
    assert not np.allclose(c["0.5"], b["0.5"])


@pytest.mark.parametrize("pad", [0, 20, 30])
def test_a_padded_context_is_laid_out_as_moirai_forecast_lays_out_past_is_pad(pad: int) -> None:
    """Every field of the 1.x sample equals MoiraiForecast._convert's, with a target, a known and a past
    covariate, context 40 (not a whole number of patches) of which `pad` steps come before the data."""
    from moirai_ft.data.covariate_windows import CovariateWindows
    from moirai_ft.data.windows import WindowSpec
    from moirai_ft.model.load import random_module
    from moirai_ft.model.families.moirai1 import MODEL_FIELDS

    ctx, pred, patch = 40, 16, 16
    g = torch.Generator().manual_seed(0)
    series = torch.randn(3, ctx + pred, generator=g)
    series[:, :pad] = float("nan")  # before the data's start
    series[0, ctx:] = float("nan")  # the target's horizon is unknown
    series[2, ctx:] = float("nan")  # so is the past covariate's
    spec = WindowSpec(ctx, pred, patch)
    windows = CovariateWindows(series, torch.tensor([ctx]), spec, "S", torch.tensor([0]), torch.tensor([1]),
                               torch.tensor([2]), pad=pad)
    mine = windows.batch(torch.tensor([0]))

    x = series.T[None]  # (1, time, var)
    observed = ~torch.isnan(x)
    x = torch.nan_to_num(x)
    is_pad = torch.zeros(1, ctx, dtype=torch.bool)
    is_pad[:, :pad] = True
    forecast = MoiraiForecast(prediction_length=pred, target_dim=1, feat_dynamic_real_dim=1, past_feat_dynamic_real_dim=1,
                              context_length=ctx, module=random_module(compose_cfg().model), patch_size=patch)
    # the horizon given as unobserved (forward leaves it out: observed there, which the model never reads)
    fields = forecast._convert(patch, x[:, :ctx, :1], observed[:, :ctx, :1], is_pad, future_target=x[:, ctx:, :1],
                               future_observed_target=observed[:, ctx:, :1],
                               feat_dynamic_real=x[:, :, 1:2], observed_feat_dynamic_real=observed[:, :, 1:2],
                               past_feat_dynamic_real=x[:, :ctx, 2:], past_observed_feat_dynamic_real=observed[:, :ctx, 2:])
    theirs = dict(zip(("target", "observed_mask", "sample_id", "time_id", "variate_id", "prediction_mask"), fields))
    for name in MODEL_FIELDS:
        if name != "patch_size":
            assert torch.equal(mine[name], theirs[name].to(mine[name].dtype)), name
    # padding-only patches: the targets' count the 8 aligning steps as padding, the covariates' do not
    assert int((mine["sample_id"] == 0).sum()) == {0: 0, 20: 1, 30: 2 + 2}[pad]


# --- predict.py ----------------------------------------------------------------------------------------------

def _predict_cfg(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from conftest import CONF  # conftest registered the schemas (moirai_ft/config/store.py)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="predict", overrides=overrides)


def _copy(job_dir: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(job_dir, to, ignore=shutil.ignore_patterns("predictions", "logs"))
    return to


def _bad_inputs(v1: Path, covariates: Path, tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (predict.py overrides, what the one line says)."""
    df = _frame(v1).rename_axis("timestamp")
    files = {
        "missing_column": df.drop(columns=["sensor_001"]),
        "new_column": df.assign(sensor_099=1.0),
        "other_frequency": df.iloc[::4],
        "shorter_than_a_patch": df.iloc[:10],
    }
    for name, frame in files.items():
        frame.to_csv(tmp / f"{name}.csv")
    damaged = _copy(v1, tmp / "damaged")
    with open(damaged / "checkpoints" / "best" / "model.safetensors", "ab") as f:
        f.write(b"\0")
    failed = _copy(v1, tmp / "sweep" / "failed")
    metrics = json.loads((failed / "metrics.json").read_text())
    (failed / "metrics.json").write_text(json.dumps({**metrics, "status": "failed", "error": "out of memory"}))
    data = lambda name: [f"job={v1}", f"data.path={tmp / name}.csv"]  # noqa: E731
    return {
        "missing_column": (data("missing_column"), "column 'sensor_001' (target) is not in the data"),
        "new_column": (data("new_column"), "column 'sensor_099' is new: the job was not trained on it; leave it out "
                                           "with data.exclude=[sensor_099]"),
        "other_frequency": (data("other_frequency"), f"the job's is {_stats(v1)['freq']}; resample the data"),
        "shorter_than_a_patch": (data("shorter_than_a_patch"), "at least one patch of context (patch_size=16"),
        "known_covariates_missing": ([f"job={covariates}"], "known covariate 'outdoor_temp' has no value"),
        "damaged_weights": ([f"job={damaged}"], "no longer matches the checksum recorded in metrics.json"),
        "not_completed": ([f"job={failed}"], "is failed (out of memory), not completed"),
        "sweep_without_a_completed_job": ([f"job={tmp / 'sweep'}"], "no completed job below"),
        "unknown_rank_by": ([f"job={v1.parent}", "rank_by=test.masee"], "rank_by=test.masee is not in these jobs"),
        "blend_of_a_job_without_one": ([f"job={v1}", "blend=true"], "has no blend (it ran without blend=true)"),
    }


def test_each_bad_input_is_one_line_and_no_forecast_file(v1, covariates, tmp_path, capsys) -> None:
    from moirai_ft.forecast.cli import data_overrides, run

    for name, (overrides, message) in _bad_inputs(v1, covariates, tmp_path).items():
        out = tmp_path / f"out_{name}"
        cfg = _predict_cfg(overrides + [f"out={out}"])
        with pytest.raises(UserError) as e:
            run(cfg, data_overrides(cfg, overrides))
        assert message in str(e.value) and "\n" not in str(e.value), (name, str(e.value))
        assert not out.exists(), name


def test_predict_py_writes_forecasts_and_refuses_in_one_line(root, v1, v2_lora, moe, covariates, tmp_path) -> None:
    """The README's quick-start forecast on a sweep (run as written), a future file, parquet; and bad input
    through the real command line: one `error:` line on stderr, exit 2, no forecast file."""
    import shlex
    import subprocess
    import sys

    from conftest import ROOT

    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

    def predict(args: list[str], cwd: Path = tmp_path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "predict.py"), *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=300)

    line = next(l for l in (ROOT / "README.md").read_text().splitlines() if l.startswith("python predict.py "))
    args = shlex.split(line)[2:]
    assert "job=multirun/" in args
    (tmp_path / "multirun").symlink_to(root)  # the sweep's jobs, as the quick start leaves them
    r = predict(args)
    assert r.returncode == 0, r.stderr[-2000:]
    best = next(j for j in analyze(root, "best_monitored").jobs if j.state.value == "completed").path
    assert f"best job by best_monitored: {best}" in r.stdout
    written = sorted((best / "predictions").glob("*/forecasts.csv"))
    assert len(written) == 1 and (written[0].parent / "forecast.png").stat().st_size > 0
    frame = pd.read_csv(written[0])
    assert list(frame.columns)[:2] == ["item", "timestamp"] and set(LEVEL_COLUMNS) <= set(frame.columns)

    # known covariates from a future file, written as parquet where out= says (predict.py's run, in-process)
    from moirai_ft.forecast.cli import data_overrides, run

    plant = building_plant(30, seed=0, num_sensors=3)
    pred = compose_cfg().prediction_length
    plant.iloc[-pred:][["outdoor_temp", "occupied"]].to_csv(tmp_path / "future.csv")
    plant.iloc[:-pred].to_csv(tmp_path / "history.csv")
    overrides = [f"job={covariates}", f"data.path={tmp_path / 'history.csv'}", f"future.path={tmp_path / 'future.csv'}",
                 f"out={tmp_path / 'cov'}", "format=parquet"]
    cfg = _predict_cfg(overrides)
    run(cfg, data_overrides(cfg, overrides))
    forecast = pd.read_parquet(tmp_path / "cov" / "forecasts.parquet")
    api = Forecaster.from_job(covariates).predict(plant.iloc[:-pred], future=plant.iloc[-pred:][["outdoor_temp", "occupied"]])
    assert list(forecast.columns) == list(api.columns)
    np.testing.assert_allclose(forecast[list(LEVEL_COLUMNS)].to_numpy(), api[list(LEVEL_COLUMNS)].to_numpy(), rtol=1e-6)

    # without it: refused, one line, exit 2, nothing written
    for args in ([f"job={covariates}", f"data.path={tmp_path / 'history.csv'}", f"out={tmp_path / 'none'}"],
                 [f"job={v1}", "format=xlsx", f"out={tmp_path / 'none'}"]):
        r = predict(args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
        assert not (tmp_path / "none").exists()
