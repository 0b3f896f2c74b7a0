"""Column roles (data.targets / known_covariates / past_covariates): the training sample is the one uni2ts's
MoiraiForecast builds at inference, the loss scores targets only, bad roles stop before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from uni2ts.loss.packed import PackedNLLLoss
from uni2ts.model.moirai import MoiraiForecast

from conftest import TINY, compose_cfg, run_train
from moirai_ft.data.prepare import PreparedData, prepare
from moirai_ft.data.roles import KNOWN, PAST, TARGET
from moirai_ft.model.load import random_module
from moirai_ft.model.families.moirai1 import LOSS_FIELDS, MODEL_FIELDS

# context and prediction not multiples of the patch, so both ends are padded
CTX, PRED, PATCH, STRIDE = 40, 20, 16, 7
COLUMNS = ["ahu_1_supply_temp", "ahu_1_setpoint", "outdoor_temp", "chiller_kw", "occupied", "status_code"]
ROLES = [
    "data.targets=[ahu_*_supply_temp,chiller_kw]",
    "data.known_covariates=[outdoor_temp,occupied]",
    "data.past_covariates=[*_setpoint]",
]


def building_csv(path: Path, rows: int = 300) -> Path:
    """Two targets, two known and one past covariate, one column in no role; gaps in targets (a context
    whose first patches no target is observed in, horizons) and in both kinds of covariates."""
    rng = np.random.default_rng(5)
    t = np.arange(rows)
    values = np.stack([np.sin(2 * np.pi * t / 24 + k) * (k + 1) + 0.2 * rng.standard_normal(rows) for k in range(6)], 1)
    values[0:30, [0, 3]] = np.nan  # the first window's first two context patches: no target observed
    values[45:49, 0] = np.nan  # target horizon
    values[50:61, 3] = np.nan
    values[20:26, 2] = np.nan  # known covariate, context and horizon of early windows
    values[44:47, 4] = np.nan
    values[30:70, 1] = np.nan  # past covariate
    values[rng.random((rows, 6)) < 0.03] = np.nan
    values[int(rows * 0.8):, [2, 4]] = np.nan_to_num(values[int(rows * 0.8):, [2, 4]])  # known over the test split
    index = pd.date_range("2024-01-01", periods=rows, freq="15min", name="timestamp")
    pd.DataFrame(values, index=index, columns=COLUMNS).to_csv(path, float_format="%.6f")
    return path


def prepared(tmp_path: Path, mode: str, extra: list[str] | None = None) -> PreparedData:
    return prepare(compose_cfg([
        "data=csv", f"data.path={building_csv(tmp_path / 'building.csv')}", f"data.mode={mode}",
        f"context_length={CTX}", f"prediction_length={PRED}", f"patch_size={PATCH}",
        f"data.window_stride={STRIDE}", "data.train_ratio=0.6", "data.val_ratio=0.2", *ROLES, *(extra or []),
    ]))


def forecast_conversion(data: PreparedData, ids: torch.Tensor, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """MoiraiForecast._convert of each window's context and horizon: the targets as past/future target, the
    known covariates as feat_dynamic_real, the past covariates as past_feat_dynamic_real, missing values
    zero-imputed and marked unobserved as its input transform (AddObservedValuesIndicator) leaves them."""
    w = data.train
    column, start = w.locate(ids)
    values = torch.from_numpy(data.normalized)  # (time, columns)

    def take(cols: torch.Tensor, first: int, last: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = start[:, None] + torch.arange(first, last)  # (batch, steps)
        x = values[rows[:, :, None], cols[None, None, :]] if cols.dim() == 1 else values[rows[:, :, None], cols[:, None, :]]
        return torch.nan_to_num(x, nan=0.0), ~torch.isnan(x)

    targets = column[:, None] if w.mode == "S" else w.targets
    past_target, past_observed = take(targets, -CTX, 0)
    future_target, future_observed = take(targets, 0, PRED)
    feat, feat_observed = take(w.known, -CTX, PRED)
    past_feat, past_feat_observed = take(w.past, -CTX, 0)
    forecast = MoiraiForecast(
        prediction_length=PRED, target_dim=past_target.shape[-1], feat_dynamic_real_dim=len(w.known),
        past_feat_dynamic_real_dim=len(w.past), context_length=CTX, module=module, patch_size=PATCH,
    )
    b = len(ids)
    fields = forecast._convert(
        PATCH, past_target, past_observed, torch.zeros(b, CTX, dtype=torch.bool),
        future_target=future_target, future_observed_target=future_observed,
        future_is_pad=torch.zeros(b, PRED, dtype=torch.bool),
        feat_dynamic_real=feat, observed_feat_dynamic_real=feat_observed,
        past_feat_dynamic_real=past_feat, past_observed_feat_dynamic_real=past_feat_observed,
    )
    names = ("target", "observed_mask", "sample_id", "time_id", "variate_id", "prediction_mask")
    out = dict(zip(names, fields))
    out["patch_size"] = torch.ones_like(out["time_id"]) * PATCH  # as MoiraiForecast._get_distr passes it
    return out


@pytest.mark.parametrize("mode", ["S", "M"])
def test_training_sample_is_the_forecast_class_conversion(tmp_path: Path, mode: str) -> None:
    data = prepared(tmp_path, mode)
    assert data.table.columns == [c for c in COLUMNS if c != "status_code"]  # no role: left out
    w = data.train
    ids = torch.arange(len(w))
    assert len(w) == len(w.starts) * (2 if mode == "S" else 1)
    torch.manual_seed(0)
    module = random_module(compose_cfg().model).eval()
    mine, theirs = w.batch(ids), forecast_conversion(data, ids, module)
    for field in MODEL_FIELDS:
        assert mine[field].shape == theirs[field].shape, field
        assert torch.equal(mine[field], theirs[field].to(mine[field].dtype)), field
    # the gaps are there: unobserved values in every role, and time ids that skip unobserved first patches
    per_variate = mine["observed_mask"][..., :PATCH].reshape(len(ids), -1, PATCH).all(-1)
    assert not per_variate.all()
    assert (mine["time_id"][0, :3] == 0).all() and mine["time_id"][0].max() < w.spec.tokens - 1
    assert (mine["prediction_mask"].sum(-1) == w.num_variates * w.spec.prediction_tokens).all()

    loss = PackedNLLLoss()
    with torch.no_grad():
        values = [loss(pred=module(**{k: b[k] for k in MODEL_FIELDS}), **{k: b[k] for k in LOSS_FIELDS})
                  for b in (mine, theirs)]
    assert torch.isfinite(values[0]) and torch.allclose(values[0], values[1], rtol=1e-6)


def test_loss_scores_targets_only(tmp_path: Path) -> None:
    data = prepared(tmp_path, "S")
    w, spec = data.train, data.spec
    torch.manual_seed(0)
    module = random_module(compose_cfg().model).eval()
    loss_func = PackedNLLLoss()
    n = len(w.starts)
    ids = torch.tensor([0, n])  # the first window of both targets (mode S: one sample per target)
    start = int(w.locate(ids)[1][0])
    col = {c: i for i, c in enumerate(data.table.columns)}

    def loss_with(column: str, row: int, value: float, fixed_forecast: bool = False) -> float:
        series = w.series.clone()
        series[col[column], row] = value
        changed = type(w)(series, w.starts, spec, w.mode, w.targets, w.known, w.past)
        batch = changed.batch(ids)
        # fixed_forecast: the model's distribution from the unchanged windows, scored against the changed values
        pred = module(**{k: (w.batch(ids) if fixed_forecast else batch)[k] for k in MODEL_FIELDS})
        with torch.no_grad():
            return float(loss_func(pred=pred, **{k: batch[k] for k in LOSS_FIELDS}))

    h = start + 3  # a horizon step of window 0 (a target with no gap there)
    base = loss_with("chiller_kw", h, float(w.series[col["chiller_kw"], h]))
    assert not np.isnan(float(w.series[col["chiller_kw"], h]))
    assert loss_with("chiller_kw", h, 9.0) != base  # a target's horizon value is scored
    assert loss_with("ahu_1_setpoint", h, 9.0) == base  # a past covariate's horizon is never in the sample
    # a known covariate's horizon is an input (the forecast changes) but never scored
    assert loss_with("outdoor_temp", h, 9.0) != base
    assert loss_with("outdoor_temp", h, 9.0, fixed_forecast=True) == base
    assert loss_with("chiller_kw", h, 9.0, fixed_forecast=True) != base


def test_normalization_records_roles(tmp_path: Path) -> None:
    data = prepared(tmp_path, "M")
    data.save_normalization(tmp_path / "normalization.json")
    stats = json.loads((tmp_path / "normalization.json").read_text())
    assert dict(zip(stats["columns"], stats["role"])) == {
        "ahu_1_supply_temp": TARGET, "ahu_1_setpoint": PAST, "outdoor_temp": KNOWN, "chiller_kw": TARGET,
        "occupied": KNOWN,
    }
    # statistics per column from the train split, as without roles
    train = data.table.values[: data.val_start]
    assert np.allclose(stats["mean"], np.nanmean(train, axis=0), atol=1e-4)


# --- bad roles: one line, exit 2, before any model loads ----------------------------------------------------------

BUILDING = ["data=building", "data.num_days=30"]
BAD_ROLES = {
    "two_roles": (["data.past_covariates=[outdoor_temp]"], "is in both data.known_covariates and data.past_covariates"),
    "names_no_column": (["data.known_covariates=[outdoor_tmp]"], "'outdoor_tmp', which matches no column"),
    # tiny at context 256 / patch 16: 17 tokens a target or known covariate, 16 a past one; 64 leave room for 2
    "over_max_seq_len": (["context_length=256", "model.max_seq_len=64"], "there is room for 2 known or 2 past covariates"),
}


def known_gap_csv(tmp: Path) -> list[str]:
    path = building_csv(tmp / "building.csv")
    frame = pd.read_csv(path, index_col=0)
    frame.iloc[270, COLUMNS.index("outdoor_temp")] = np.nan  # in a test window's horizon
    frame.to_csv(path)
    return ["data=csv", f"data.path={path}", f"context_length={CTX}", f"prediction_length={PRED}",
            f"patch_size={PATCH}", "data.train_ratio=0.6", "data.val_ratio=0.2", *ROLES]


@pytest.mark.parametrize("case", [*BAD_ROLES, "known_missing_over_test_horizon"])
def test_bad_roles_stop_before_any_model_loads(case: str, tmp_path: Path, monkeypatch) -> None:
    from moirai_ft.train import job

    if case in BAD_ROLES:
        overrides, expected = BAD_ROLES[case]
        cfg = compose_cfg([*BUILDING, *overrides])
    else:
        cfg, expected = compose_cfg(known_gap_csv(tmp_path)), "known covariate 'outdoor_temp' is missing over the horizon"

    def no_model(*_a, **_k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(job, "load_module", no_model)
    metrics = job.run(cfg, tmp_path / "job")
    assert metrics["status"] == "failed" and metrics["error_type"] == "config", metrics
    assert expected in metrics["error"] and "\n" not in metrics["error"]
    assert not (tmp_path / "job" / "checkpoints").exists() and not (tmp_path / "job" / "normalization.json").exists()


def test_bad_role_through_train_py_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = run_train([*TINY, *BUILDING, *BAD_ROLES["two_roles"][0]], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and BAD_ROLES["two_roles"][1] in errors[0] and "Traceback" not in proc.stderr


# --- a job with covariates resumes after a kill to the numbers of a clean run --------------------------------------


@pytest.mark.slow  # three train.py processes: a clean run, a killed one, its resumption
def test_sigkill_then_resume_with_covariates(tmp_path: Path) -> None:
    from tests.train.test_reliability import RESUMABLE, assert_same_result

    # every role in each sample; a small evaluation: three models score the test windows
    args = [*RESUMABLE, *BUILDING, "data.mode=M", "eval.num_samples=20", "eval.plot_windows=0"]
    clean, job = tmp_path / "clean", tmp_path / "job"
    r = run_train([*args, f"hydra.run.dir={clean}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "test_without_covariates" in json.loads((clean / "metrics.json").read_text())
    killed = run_train([*args, f"hydra.run.dir={job}"], cwd=tmp_path, env={"MOIRAI_FT_INJECT_KILL_AT_STEP": "6"})
    assert killed.returncode == -9 and (job / "checkpoints" / "last.ckpt").is_file()
    resumed = run_train([*args, f"hydra.run.dir={job}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr + resumed.stdout
    assert_same_result(job, clean)


# --- a known covariate that drives the target helps: real, not noise -----------------------------------------------

# chiller_kw follows the outdoor temperature, whose fronts arrive within the 4-hour horizon, and occupancy, whose
# hours change from day to day: known ahead, both are in the sample; without them the model can only extrapolate
# the context. The tiny model reads 16-step patches only (model.patch_sizes=[16]: a small output head) and learns
# fast (lr 5e-3, 200 steps). Seeds 0, 1, 2 gave intervals of [0.13, 0.27], [0.29, 0.43], [0.02, 0.24].
DRIVEN = [
    "data=building", "data.num_days=90", "data.targets=[chiller_kw]", "data.known_covariates=[outdoor_temp,occupied]",
    "data.past_covariates=[]", "model.patch_sizes=[16]", "context_length=32", "prediction_length=16",
    "patch_size=16", "lr=5e-3", "steps_per_epoch=200", "eval.max_windows=null", "eval.num_samples=20",
    "eval.plot_windows=0", "hardware.progress_bar_refresh=0",
]


def test_known_covariate_beats_the_same_job_without_it(tmp_path: Path) -> None:
    from uni2ts.model.moirai import MoiraiModule

    from moirai_ft.evaluation.bootstrap import relative_improvement_interval
    from moirai_ft.scores import item_parts
    from moirai_ft.evaluation.compare import selected_dir
    from moirai_ft.evaluation.forecast import forecast_quantiles
    from moirai_ft.evaluation.scoring import eval_items
    from moirai_ft.train.job import run
    from moirai_ft.data.windows import eval_batches

    parts, maes = {}, {}
    for label, extra in (("with", []), ("without", ["data.known_covariates=[]"])):
        cfg = compose_cfg([*DRIVEN, *extra])
        metrics = run(cfg, tmp_path / label)
        assert metrics["status"] == "completed" and metrics["finetune_helped"]
        maes[label] = metrics["test"]["mae"]
        # the third row: the fine-tuned model asked without its covariates (only in the job that has them)
        third = metrics.get("test_without_covariates")
        assert (set(third) == set(metrics["test"]) - {"val_nll"}) if label == "with" else third is None
        # the job's test forecasts again, window by window, for a paired bootstrap over the same test windows
        data = prepare(cfg)
        batches = eval_batches(len(data.test), cfg.eval.batch_size, cfg.eval.max_windows)
        module = MoiraiModule.from_pretrained(str(selected_dir(tmp_path / label))).eval()
        q = forecast_quantiles(module, data.test, batches, cfg.eval.num_samples, cfg.eval.seed, desc=label)
        items = eval_items(data.test, torch.cat(batches))
        rows, cols = items.starts[:, None] + np.arange(q.shape[-1]), items.columns[:, None]
        to_orig = q * data.std[items.columns][:, None, None] + data.mean[items.columns][:, None, None]
        parts[label] = item_parts(data.table.values[rows, cols], to_orig)
        assert np.isclose(parts[label][:, 1].sum() / parts[label][:, 0].sum(), maes[label], rtol=1e-4)
    assert maes["with"] < maes["without"]
    low, high = relative_improvement_interval(parts["with"], parts["without"], names=("mae",), seed=0)["mae"]
    assert low > 0, (maes, low, high)  # the 95% interval of the relative MAE improvement excludes 0

    from moirai_ft.analysis.report import analyze

    shown = analyze(tmp_path).frame.set_index("job")["test_without_covariates.mae"]  # summary.csv's column
    assert shown["with"] > 0 and pd.isna(shown["without"])


def test_readme_roles_example_prepares(tmp_path: Path) -> None:
    """The README's column-roles command on the export `make_building_csv.py --plant` writes: every role
    resolves, known covariates are given over every test horizon (checked up to the windows, not trained)."""
    import importlib.util
    import shlex

    from conftest import ROOT

    text = (ROOT / "README.md").read_text().split("**Targets and covariates", 1)[1].replace("\\\n", " ")
    line = next(x.strip() for x in text.splitlines() if x.strip().startswith("python train.py data=csv"))
    args = [a for a in shlex.split(line.split("#")[0])[2:] if not a.startswith("data.path=")]
    spec = importlib.util.spec_from_file_location("make_building_csv", ROOT / "examples" / "make_building_csv.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    path = generator.write_building_csv(tmp_path / "plant.csv", days=30, plant=True)
    data = prepare(compose_cfg([*args, f"data.path={path}"]))
    assert data.roles is not None and data.roles.targets == ("ahu_1_supply_temp", "ahu_2_supply_temp", "chiller_kw")
    assert data.roles.known == ("outdoor_temp", "occupied") and data.roles.past == ("ahu_1_setpoint", "ahu_2_setpoint")
