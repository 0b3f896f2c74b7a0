"""Moirai 2.0 and Moirai-MoE on several variates (data.mode=M) and with covariates: the objective pairs
each token with the patches it forecasts by (sample, variate, time id) in the forecast class's layout
(every target's context, then every target's horizon, then the covariates), covariates are inputs and
never scored, and the test forecast is the uni2ts forecast class's, rollout included."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from uni2ts.model.moirai2 import Moirai2Forecast
from uni2ts.model.moirai_moe import MoiraiMoEForecast

from conftest import compose_cfg
from moirai_ft.data.prepare import PreparedData, prepare
from moirai_ft.model.family import sample_quantiles
from moirai_ft.model.families import family_of
from moirai_ft.model.fast_path import distribution_validation
from moirai_ft.model.load import random_module
from tests.data.test_covariates import ROLES, building_csv

# tiny_moirai2 forecasts num_predict_token=2 patches a step; 40 steps are 3 patches of 16 (the last one
# half padding), the context 3 patches (the first half padding)
CTX, PATCH = 40, 16
MODELS = ["tiny_moirai2", "tiny_moe"]
TARGETS_ONLY = ["data.targets=[ahu_*_supply_temp,chiller_kw]"]  # the same targets, no covariate


def prepared(tmp_path: Path, model: str, mode: str, roles: list[str], pred: int = 40) -> PreparedData:
    """building_csv's gaps: no target observed in the first window's first two context patches (their
    time ids tie at 0), gaps in both targets' horizons and in the covariates."""
    return prepare(compose_cfg([
        f"model={model}", "data=csv", f"data.path={building_csv(tmp_path / 'building.csv')}", f"data.mode={mode}",
        f"context_length={CTX}", f"prediction_length={pred}", f"patch_size={PATCH}", "data.window_stride=7",
        "data.train_ratio=0.6", "data.val_ratio=0.2", *roles,
    ]))


def layout_pairs(batch: dict, targets: int, ctx: int, pred: int, k_ahead: int) -> list[tuple[int, int, int, int, int]]:
    """(row, source position, slot, target position, variate) of every scored pair, read off the forecast
    class's layout: target v's context tokens at v*ctx + j, its horizon tokens at targets*ctx + v*pred + h,
    in time order; slot k of v's token at time t forecasts v's horizon patch at time t + 1 + k; of
    tokens sharing a time id (the unobserved first context patches) the last one. Covariates are not
    targets: never a source or a target."""
    pairs = []
    for i in range(batch["time_id"].shape[0]):
        tid = batch["time_id"][i].tolist()
        for v in range(targets):
            tokens = [v * ctx + j for j in range(ctx)] + [targets * ctx + v * pred + h for h in range(pred)]
            for n, s in enumerate(tokens):
                if n + 1 < len(tokens) and tid[tokens[n + 1]] == tid[s]:
                    continue
                for k in range(k_ahead):
                    pairs += [(i, s, k, u, v) for u in tokens[ctx:] if tid[u] == tid[s] + 1 + k]
    return pairs


def packed_mean(values: dict[tuple[int, int], list[float]], groups: set[tuple[int, int]]) -> float:
    """uni2ts's packed reduction: the mean over the series with a scored patch of the mean over its
    observed values (a series with none counts as 0)."""
    return sum(np.mean(values[g]) if values[g] else 0.0 for g in groups) / len(groups)


def _pinball(levels, forecast: np.ndarray, y: float) -> float:
    return float(np.mean([max(q * (y - f), (q - 1) * (y - f)) for q, f in zip(levels, forecast)]))


def expected_loss(model: str, module, batch: dict, pairs, skip_context_sources: bool = False) -> float:
    values: dict[tuple[int, int], list[float]] = defaultdict(list)
    groups = set()
    obs = batch["observed_mask"]
    with torch.no_grad(), distribution_validation(False):
        if model == "tiny_moirai2":
            preds, scaled = module(**{k: batch[k] for k in ("target", "observed_mask", "sample_id", "time_id",
                                                            "variate_id", "prediction_mask")}, training_mode=True)
            b, seq, _ = scaled.shape
            levels, p = module.quantile_levels, module.patch_size
            preds = preds.reshape(b, seq, module.num_predict_token, len(levels), p)
        else:
            distr = module(**{k: batch[k] for k in ("target", "observed_mask", "sample_id", "time_id", "variate_id",
                                                    "prediction_mask", "patch_size")})
            shifted = torch.zeros_like(batch["target"])  # each source's target patch at the source's position
            for i, s, _, u, _ in pairs:
                shifted[i, s] = batch["target"][i, u]
            nll = -distr.log_prob(shifted)
    context = set()
    for i, s, k, u, v in pairs:
        if batch["prediction_mask"][i, s] == 0:
            context.add((i, s))
        if skip_context_sources and (i, s) in context:
            continue
        groups.add((i, v))
        for j in range(obs.shape[-1]):
            if obs[i, u, j]:
                if model == "tiny_moirai2":
                    values[(i, v)].append(_pinball(levels, preds[i, s, k, :, j].numpy(), float(scaled[i, u, j])))
                else:
                    values[(i, v)].append(float(nll[i, s, j]))
    return packed_mean(values, groups)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("roles", [TARGETS_ONLY, ROLES], ids=["targets", "covariates"])
def test_mode_m_loss_is_the_layout_loop_and_scores_the_last_context_token(tmp_path: Path, model: str, roles: list[str]) -> None:
    data = prepared(tmp_path, model, "M", roles)
    w, s = data.train, data.spec
    cfg = compose_cfg([f"model={model}"])
    torch.manual_seed(0)
    module = random_module(cfg.model)
    family = family_of(cfg.model)
    ids = torch.arange(4)
    batch = family.batch(w, ids)
    loss = float(family.loss(module, batch))
    targets = w.num_variates
    assert targets == 2 and w.has_covariates == (roles == ROLES)
    k_ahead = module.num_predict_token if model == "tiny_moirai2" else 1
    pairs = layout_pairs(batch, targets, s.context_tokens, s.prediction_tokens, k_ahead)
    # the gaps are there: unobserved target values, tied time ids in the first window
    assert not batch["observed_mask"][0, : targets * s.tokens, :PATCH].all() and batch["time_id"][0, 1] == 0
    assert loss == pytest.approx(expected_loss(model, module, batch, pairs), rel=1e-5)
    # the pair the forecast uses first: each target's last context token -> its first horizon patch, slot 0
    for i in range(len(ids)):
        for v in range(targets):
            assert (i, v * s.context_tokens + s.context_tokens - 1, 0, targets * s.context_tokens + v * s.prediction_tokens, v) in pairs
    # ... and it counts: without the context tokens' pairs the loss is another number
    assert loss != pytest.approx(expected_loss(model, module, batch, pairs, skip_context_sources=True), rel=1e-3)


@pytest.mark.parametrize("model", MODELS)
def test_loss_scores_targets_only(tmp_path: Path, model: str) -> None:
    """A covariate's value is an input, never scored: with the forecast held fixed (the module's output on
    the unchanged windows; Moirai 2.0's scaled targets still from the changed ones), a known covariate's
    horizon value leaves the loss as it is, a target's changes it."""
    data = prepared(tmp_path, model, "M", ROLES)
    w = data.train
    cfg = compose_cfg([f"model={model}"])
    torch.manual_seed(0)
    module = random_module(cfg.model).eval()
    family = family_of(cfg.model)
    ids = torch.tensor([3])
    start = int(w.locate(ids)[1][0])
    col = {c: i for i, c in enumerate(data.table.columns)}

    def loss_with(column: str, value: float) -> float:
        series = w.series.clone()
        series[col[column], start + 3] = value
        changed = type(w)(series, w.starts, w.spec, w.mode, w.targets, w.known, w.past)
        with torch.no_grad():
            return float(family.loss(module, family.batch(changed, ids)))

    first: list = []

    def hold(_module, _inputs, out):  # the first output, for every later forward
        first.append(out) if not first else None
        return (first[0][0], out[1]) if isinstance(out, tuple) else first[0]

    base = loss_with("chiller_kw", float(w.series[col["chiller_kw"], start + 3]))
    assert not math.isnan(base)
    handle = module.register_forward_hook(hold)
    held = loss_with("chiller_kw", float(w.series[col["chiller_kw"], start + 3]))
    assert held == base
    assert loss_with("chiller_kw", 9.0) != base  # a target's horizon value is scored
    assert loss_with("outdoor_temp", 9.0) == base  # a known covariate's is not
    handle.remove()
    assert loss_with("outdoor_temp", 9.0) != base  # though the forecast reads it


def their_inputs(data: PreparedData, ids: torch.Tensor, pred: int, context_extra: np.ndarray | None = None) -> dict:
    """The forecast class's forward arguments read from the normalised table (not from our windows): the
    targets' context, the known covariates over context and horizon, the past covariates over the context;
    gaps zero and unobserved. context_extra (batch, steps, targets) is appended to the targets' context."""
    w = data.train
    column, start = w.locate(ids)
    values = torch.from_numpy(data.normalized).float()

    def take(cols: torch.Tensor, first: int, last: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = start[:, None] + torch.arange(first, last)
        x = values[rows[:, :, None], cols[:, None, :] if cols.dim() == 2 else cols[None, None, :]]
        return torch.nan_to_num(x, nan=0.0), ~torch.isnan(x)

    targets = column[:, None] if w.mode == "S" else w.targets
    past_target, past_observed = take(targets, -CTX, 0)
    extra = 0
    if context_extra is not None:
        extra = context_extra.shape[1]
        past_target = torch.cat([past_target, torch.as_tensor(context_extra)], 1)
        past_observed = torch.cat([past_observed, torch.ones(context_extra.shape, dtype=torch.bool)], 1)
    inputs = {"past_target": past_target, "past_observed_target": past_observed,
              "past_is_pad": torch.zeros(past_target.shape[:2], dtype=torch.bool)}
    if len(w.known):
        inputs["feat_dynamic_real"], inputs["observed_feat_dynamic_real"] = take(w.known, -CTX, pred + extra)
    if len(w.past):
        inputs["past_feat_dynamic_real"], inputs["past_observed_feat_dynamic_real"] = take(w.past, -CTX, 0)
    return inputs


def as_items(q: torch.Tensor) -> np.ndarray:
    """(batch, level, pred[, var]) -> (batch * var, level, pred), the order of forecast_quantiles's items."""
    q = q if q.dim() == 4 else q.unsqueeze(-1)
    return q.permute(0, 3, 1, 2).reshape(-1, q.shape[1], q.shape[2]).numpy()


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("mode", ["S", "M"])
def test_forecast_with_covariates_is_the_forecast_class(tmp_path: Path, model: str, mode: str) -> None:
    """Known and past covariates, gaps everywhere. Moirai 2.0 in mode S over 3 patches rolls out (uni2ts's
    own rollout, one target); in mode M within num_predict_token patches (beyond: the next test)."""
    pred = 20 if (model, mode) == ("tiny_moirai2", "M") else 40
    data = prepared(tmp_path, model, mode, ROLES, pred)
    w = data.train
    cfg = compose_cfg([f"model={model}"])
    torch.manual_seed(0)
    module = random_module(cfg.model).eval()
    family = family_of(cfg.model)
    ids = torch.tensor([0, 1, 5, len(w) - 1])
    ours = family.forecast_quantiles(module, w, [ids], 20, 7, "")
    inputs = their_inputs(data, ids, pred)
    k, p = len(w.known), len(w.past)
    assert k and p
    with torch.no_grad():
        if model == "tiny_moirai2":
            theirs = Moirai2Forecast(prediction_length=pred, target_dim=w.num_variates, feat_dynamic_real_dim=k,
                                     past_feat_dynamic_real_dim=p, context_length=CTX, module=module)(**inputs)
        else:
            forecast = MoiraiMoEForecast(prediction_length=pred, target_dim=w.num_variates, feat_dynamic_real_dim=k,
                                         past_feat_dynamic_real_dim=p, context_length=CTX, module=module,
                                         patch_size=PATCH, num_samples=20)
            torch.manual_seed(7)
            paths = forecast(**inputs)  # (batch, sample, pred[, var])
            theirs = sample_quantiles(paths.transpose(0, 1)).transpose(0, 1)
    assert ours.shape == as_items(theirs).shape
    assert np.allclose(ours, as_items(theirs), atol=1e-5)
    # the covariates are in the forecast: without them it is another one
    without = family.forecast_quantiles(module, w.without_covariates(), [ids], 20, 7, "")
    assert np.abs(without - ours).max() > 1e-3


def test_moirai2_mode_m_rollout_is_the_forecast_class_step_by_step(tmp_path: Path) -> None:
    """Moirai 2.0, 2 targets with gaps, 3 horizon patches with num_predict_token 2: uni2ts's rollout fails
    on several targets. Ours against the forecast class one step at a time, each step within
    num_predict_token patches (where it handles several targets): the first 2 patches from the context;
    then for each of the 9 quantile paths, the context extended by that path (what the rollout feeds back,
    with the same patches, time ids and masks), the next patch's 9 quantiles; their quantiles over the
    9 x 9 values. (Without covariates: a known covariate's scale is taken over its horizon too, so the
    first step's shorter horizon would change it.)"""
    data = prepared(tmp_path, "tiny_moirai2", "M", TARGETS_ONLY)
    w = data.train
    cfg = compose_cfg(["model=tiny_moirai2"])
    torch.manual_seed(0)
    module = random_module(cfg.model).eval()
    k_ahead, levels = module.num_predict_token, module.quantile_levels
    first, rest = k_ahead * PATCH, 40 - k_ahead * PATCH
    ids = torch.tensor([0, 2, 9])
    ours = family_of(cfg.model).forecast_quantiles(module, w, [ids], 1, 0, "")  # (batch * var, level, pred)

    def forecast(pred: int, context: int) -> Moirai2Forecast:
        return Moirai2Forecast(prediction_length=pred, target_dim=2, feat_dynamic_real_dim=len(w.known),
                               past_feat_dynamic_real_dim=0, context_length=context, module=module)

    with torch.no_grad():
        step1 = forecast(first, CTX)(**their_inputs(data, ids, first))  # (batch, level, first, var)
        paths = [forecast(rest, CTX + first)(**their_inputs(data, ids, rest, step1[:, j].numpy()))
                 for j in range(len(levels))]  # each (batch, level, rest, var)
        step2 = torch.quantile(torch.cat(paths, 1), torch.tensor(levels), dim=1).permute(1, 0, 2, 3)
    assert np.allclose(ours[..., :first], as_items(step1), atol=1e-5)
    assert np.allclose(ours[..., first:], as_items(step2), atol=1e-4)
    assert np.isfinite(ours).all()


def test_moirai2_univariate_rollout_equals_the_forecast_class_exactly() -> None:
    """One target, 6 patches with num_predict_token 2 (three rollout steps): uni2ts's own rollout, bit for bit."""
    cfg = compose_cfg(["model=tiny_moirai2", "context_length=64", "prediction_length=90"])
    data = prepare(cfg)
    data.test.series[0, -60:-50] = math.nan
    torch.manual_seed(0)
    module = random_module(cfg.model).eval()
    ids = torch.arange(6)
    ours = family_of(cfg.model).forecast_quantiles(module, data.test, [ids], 1, 0, "")
    x = data.test.raw(ids)[:, 0, :64, None]
    forecast = Moirai2Forecast(prediction_length=90, target_dim=1, feat_dynamic_real_dim=0,
                               past_feat_dynamic_real_dim=0, context_length=64, module=module)
    with torch.no_grad():
        theirs = forecast(torch.nan_to_num(x), ~torch.isnan(x), torch.zeros(x.shape[:2], dtype=torch.bool))
    assert np.array_equal(ours, as_items(theirs))


@pytest.mark.parametrize(("model", "extra"), [
    # 2.0 in mode M over 3 horizon patches (num_predict_token 2): the rollout over several targets
    ("tiny_moirai2", ["data.mode=M", "prediction_length=48"]),
    ("tiny_moe", []),
])
def test_building_job_with_covariates_records_test_without_covariates(tmp_path: Path, model: str, extra: list[str]) -> None:
    from moirai_ft.train.job import run_job

    cfg = compose_cfg([f"model={model}", "data=building", "data.num_days=20", "eval.num_samples=10",
                       "eval.max_windows=8", "eval.plot_windows=0", *extra])
    metrics = run_job(cfg, tmp_path)
    assert metrics["status"] == "completed" and "test_error" not in metrics, metrics.get("test_error")
    assert set(metrics["test_without_covariates"]) == set(metrics["test"]) - {"val_nll"}
    assert metrics["test_without_covariates"]["mae"] != metrics["test"]["mae"]
    assert metrics["zero_shot_test"]["mae"] != metrics["test_without_covariates"]["mae"]
