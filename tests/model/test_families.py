"""Moirai 2.0 and Moirai-MoE fine-tune with their own objectives and forecast as their uni2ts forecast
classes do; patterns per family; weights round-trip through save_pretrained directories."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from uni2ts.model.moirai2 import Moirai2Forecast, Moirai2Module
from uni2ts.model.moirai_moe import MoiraiMoEForecast, MoiraiMoEModule

from conftest import compose_cfg
from moirai_ft.data.prepare import prepare
from moirai_ft.data.windows import IndexBatches, eval_batches, index_loader
from moirai_ft.errors import UserError
from moirai_ft.evaluation.forecast import forecast_quantiles
from moirai_ft.evaluation.reevaluate import reevaluate
from moirai_ft.evaluation.scoring import eval_items, model_metrics
from moirai_ft.evaluation.metrics import seasonal_errors, seasonality
from moirai_ft.model.family import sample_quantiles
from moirai_ft.model.families import family_of
from moirai_ft.model.families.decoder import CONVERTED
from moirai_ft.model.fast_path import distribution_validation
from moirai_ft.model.load import load_module, random_module
from moirai_ft.model.patterns import apply_pattern
from moirai_ft.train.finetuner import MoiraiFineTuner
from moirai_ft.train.job import run_job

NEW = {"tiny_moirai2": Moirai2Module, "tiny_moe": MoiraiMoEModule}


def _pinball(q: float, forecast: float, y: float) -> float:
    return max(q * (y - forecast), (q - 1) * (y - forecast))


def test_moirai2_loss_is_the_pinball_loss_of_every_position_on_the_horizon_patches_ahead() -> None:
    # context and horizon not multiples of the patch (padding at both ends); 3 horizon patches > 2 ahead
    cfg = compose_cfg(["model=tiny_moirai2", "context_length=40", "prediction_length=40"])
    data = prepare(cfg)
    data.train.series[0, 20:25] = math.nan  # in window 0's context
    data.train.series[0, 45:50] = math.nan  # in its horizon
    torch.manual_seed(0)
    module = random_module(cfg.model)
    family = family_of(cfg.model)
    batch = family.batch(data.train, torch.arange(4))
    loss = family.loss(module, batch)

    with torch.no_grad():
        preds, scaled = module(**{k: batch[k] for k in CONVERTED}, training_mode=True)
    b, seq, _ = scaled.shape
    k_ahead, levels, p = module.num_predict_token, module.quantile_levels, module.patch_size
    preds = preds.reshape(b, seq, k_ahead, len(levels), p)
    sid, vid, pm, obs = batch["sample_id"], batch["variate_id"], batch["prediction_mask"], batch["observed_mask"]
    per_series: dict[tuple[int, int], list[float]] = defaultdict(list)
    for i in range(b):
        for t in range(seq):
            for k in range(k_ahead):
                u = t + 1 + k  # slot k of position t forecasts patch t + 1 + k
                if u >= seq or sid[i, t] == 0 or (sid[i, u], vid[i, u]) != (sid[i, t], vid[i, t]) or not pm[i, u]:
                    continue
                for j in range(p):
                    if obs[i, u, j]:
                        y = float(scaled[i, u, j])
                        per_series[(i, int(vid[i, t]))].append(
                            np.mean([_pinball(q, float(preds[i, t, k, n, j]), y) for n, q in enumerate(levels)])
                        )
    assert len(per_series) == b and not obs[0].all()  # the gaps are excluded, every window scored
    expected = np.mean([np.mean(v) for v in per_series.values()])
    assert float(loss) == pytest.approx(expected, rel=1e-5)

    # the alignment is the forecast class's: its first horizon patch is slot 0 at the last context position
    module.eval()
    ours = family.forecast_quantiles(module, data.train, [torch.arange(1)], 1, 0, "")
    with torch.no_grad():
        preds, scaled = module(**{k: batch[k] for k in CONVERTED}, training_mode=True)
    last_ctx = data.spec.context_tokens - 1
    slot0 = preds.reshape(b, seq, k_ahead, len(levels), p)[0, last_ctx, 0]
    loc, scale = module.scaler(batch["target"][:1], batch["observed_mask"][:1] & ~batch["prediction_mask"][:1, :, None],
                               batch["sample_id"][:1], batch["variate_id"][:1])
    assert np.allclose(ours[0][:, :p], (slot0 * scale[0, last_ctx] + loc[0, last_ctx]).numpy(), atol=1e-5)


def test_moe_loss_scores_each_position_on_the_next_patch() -> None:
    cfg = compose_cfg(["model=tiny_moe", "context_length=40", "prediction_length=40"])
    data = prepare(cfg)
    data.train.series[0, 45:50] = math.nan
    torch.manual_seed(0)
    module = random_module(cfg.model)
    family = family_of(cfg.model)
    batch = family.batch(data.train, torch.arange(4))
    loss = family.loss(module, batch)
    with torch.no_grad(), distribution_validation(False):
        distr = module(**{k: batch[k] for k in CONVERTED}, patch_size=batch["patch_size"])
        nll = -distr.log_prob(torch.roll(batch["target"], -1, dims=1))  # position t scored on patch t + 1
    sid, vid, pm, obs = batch["sample_id"], batch["variate_id"], batch["prediction_mask"], batch["observed_mask"]
    series = []
    for i in range(len(sid)):
        values = [float(nll[i, t, j]) for t in range(sid.shape[1] - 1) if pm[i, t + 1] and sid[i, t] != 0
                  and vid[i, t + 1] == vid[i, t] for j in range(obs.shape[2]) if obs[i, t + 1, j]]
        series.append(np.mean(values))
    assert not obs[0][pm[0]].all()
    assert float(loss) == pytest.approx(np.mean(series), rel=1e-5)


def _train_steps(model: str, pattern: str, steps: int = 3, lr: float = 1e-2):
    cfg = compose_cfg([f"model={model}", f"pattern={pattern}"])
    data = prepare(cfg)
    torch.manual_seed(0)
    module = apply_pattern(random_module(cfg.model), cfg.pattern)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    order = IndexBatches(len(data.train), 8, True, 0, steps)
    ft = MoiraiFineTuner(module, data.train, data.val, order, lr=lr, weight_decay=0.1, scheduler="constant",
                         warmup_steps=0, total_steps=steps, min_lr_ratio=1.0)
    L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
              gradient_clip_val=1.0).fit(ft, index_loader(order))
    after = {n: p.detach().clone() for n, p in module.named_parameters()}
    return cfg, data, module, before, after


@pytest.mark.parametrize("model", list(NEW))
@pytest.mark.parametrize("pattern", ["head_only", "freeze_ffn"])
def test_patterns_leave_frozen_parameters_bit_for_bit(model: str, pattern: str) -> None:
    _, _, module, before, after = _train_steps(model, pattern)
    head = "out_proj." if model == "tiny_moirai2" else "param_proj."
    trained = [n for n in before if (n.startswith(head) if pattern == "head_only" else ".ffn." not in f".{n}")]
    frozen = [n for n in before if n not in trained]
    assert trained and frozen
    if pattern == "freeze_ffn" and model == "tiny_moe":
        assert any(".experts." in n for n in frozen)  # the MoE experts are feed-forward
    for n in frozen:
        assert torch.equal(before[n], after[n]), n
    assert any(not torch.equal(before[n], after[n]) for n in trained)


def test_lora_trains_adapters_only_and_its_merged_checkpoint_forecasts_the_same(tmp_path: Path) -> None:
    from moirai_ft.model.lora import save_plain

    cfg, data, module, before, after = _train_steps("tiny_moirai2", "lora", lr=5e-2)
    lora = [n for n in before if "lora_" in n]
    assert lora and any(not torch.equal(before[n], after[n]) for n in lora)
    for n in before:
        if "lora_" not in n:
            assert torch.equal(before[n], after[n]), n  # base weights unchanged
    save_plain(module, tmp_path / "best")
    plain = Moirai2Module.from_pretrained(str(tmp_path / "best"))
    assert not any("lora" in k for k in plain.state_dict())
    batches = eval_batches(len(data.test), 8, 16)
    q_adapter = forecast_quantiles(module.eval(), data.test, batches, 10, 0, "")
    q_merged = forecast_quantiles(plain.eval(), data.test, batches, 10, 0, "")
    assert np.abs(q_adapter - q_merged).max() < 1e-4
    q_base = forecast_quantiles(random_module(cfg.model).eval(), data.test, batches, 10, 0, "")
    assert np.abs(q_adapter - q_base).max() > 1e-3  # the adapters changed the forecast


@pytest.mark.parametrize("model", list(NEW))
def test_save_pretrained_round_trip_and_a_checkpoint_of_another_family(tmp_path: Path, model: str) -> None:
    cfg = compose_cfg([f"model={model}"])
    saved = random_module(cfg.model)
    saved.save_pretrained(tmp_path / "ckpt")
    loaded = load_module(compose_cfg([f"model={model}", "model.init=pretrained", f"model.checkpoint={tmp_path / 'ckpt'}"]).model)
    assert type(loaded) is NEW[model]
    a, b = saved.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a Moirai 1.x checkpoint given as this family
    random_module(compose_cfg().model).save_pretrained(tmp_path / "v1")
    other = compose_cfg([f"model={model}", "model.init=pretrained", f"model.checkpoint={tmp_path / 'v1'}"])
    with pytest.raises(UserError, match="is a Moirai 1.x checkpoint") as e:
        load_module(other.model)
    assert "\n" not in str(e.value)


def test_family_preflight_is_one_line_each(tmp_path: Path) -> None:
    from moirai_ft.config.schema import validate

    with pytest.raises(UserError, match=r"patch_size=32 is not one of the model's patch sizes \[16\]"):
        validate(compose_cfg(["model=tiny_moirai2", "patch_size=32"]))
    with pytest.raises(UserError, match="over the model's max_seq_len 4"):
        prepare(compose_cfg(["model=tiny_moe", "model.max_seq_len=4"]))
    with pytest.raises(UserError, match="hardware.compile=off"):
        family_of(compose_cfg(["model=tiny_moirai2"]).model).check_compile("default")
    random_module(compose_cfg(["model=tiny_moirai2"]).model).save_pretrained(tmp_path / "m2")
    with pytest.raises(UserError, match="model.max_seq_len=512") as e:  # weights unlike the model option
        load_module(compose_cfg(["model=tiny_moirai2", "model.init=pretrained", f"model.checkpoint={tmp_path / 'm2'}",
                                 "model.max_seq_len=256"]).model)
    assert "\n" not in str(e.value)


def _their_forecast(model: str, module: torch.nn.Module, data, ids: torch.Tensor, num_samples: int, seed: int, batch_size: int):
    """The uni2ts forecast class on the same windows, read from the normalised table (not our Windows)."""
    s = data.spec
    col, start = data.test.locate(ids)
    ctx = np.stack([data.normalized[f - s.context_length: f, c] for c, f in zip(col.tolist(), start.tolist())])
    if model == "tiny_moirai2":
        forecast = Moirai2Forecast(prediction_length=s.prediction_length, target_dim=1, feat_dynamic_real_dim=0,
                                   past_feat_dynamic_real_dim=0, context_length=s.context_length, module=module)
        return np.concatenate([forecast.predict(list(ctx[i: i + batch_size, :, None]))
                               for i in range(0, len(ctx), batch_size)])
    forecast = MoiraiMoEForecast(prediction_length=s.prediction_length, target_dim=1, feat_dynamic_real_dim=0,
                                 past_feat_dynamic_real_dim=0, context_length=s.context_length, module=module,
                                 patch_size=s.patch_size, num_samples=num_samples)
    out = []
    torch.manual_seed(seed)
    with torch.no_grad():
        for i in range(0, len(ctx), batch_size):
            x = torch.tensor(ctx[i: i + batch_size, :, None])
            paths = forecast(x, torch.ones_like(x, dtype=torch.bool), torch.zeros(x.shape[:2], dtype=torch.bool))
            out.append(sample_quantiles(paths.transpose(0, 1)).transpose(0, 1).numpy())
    return np.concatenate(out)


@pytest.mark.parametrize("model", list(NEW))
def test_job_trains_and_its_test_forecast_is_the_uni2ts_forecast_class(tmp_path: Path, model: str) -> None:
    cfg = compose_cfg([f"model={model}", "eval.num_samples=20", "eval.batch_size=8", "eval.max_windows=16",
                       "steps_per_epoch=8", "lr=3e-3"])
    metrics = run_job(cfg, tmp_path)
    assert metrics["status"] == "completed" and metrics["family"] == family_of(cfg.model).name
    assert metrics["best_val_loss"] < metrics["zero_shot_val_loss"]  # the objective falls on the synthetic data
    selected = NEW[model].from_pretrained(str(tmp_path / "checkpoints" / "best")).eval()
    data = prepare(cfg)
    batches = eval_batches(len(data.test), cfg.eval.batch_size, cfg.eval.max_windows)
    ids = torch.cat(batches)
    theirs = _their_forecast(model, selected, data, ids, cfg.eval.num_samples, cfg.eval.seed, cfg.eval.batch_size)
    ours = forecast_quantiles(selected, data.test, batches, cfg.eval.num_samples, cfg.eval.seed, "")
    assert ours.shape == theirs.shape
    assert np.allclose(ours, theirs, atol=1e-5)
    items = eval_items(data.test, ids)
    scores = model_metrics(theirs, items, data, seasonal_errors(data.table.values, items.columns, items.starts,
                                                                seasonality(data.table.freq)))
    for key, value in scores.items():
        assert metrics["test"][key] == pytest.approx(value, rel=1e-5), key
    again = reevaluate(tmp_path)  # `python -m moirai_ft.evaluate <job_dir>` rebuilds this family's models
    assert again["test"] == pytest.approx(metrics["test"], rel=1e-6)


@pytest.mark.slow
def test_a_sweep_over_families_and_patterns_is_ranked_and_plotted(tmp_path: Path) -> None:
    import csv
    import json
    import subprocess
    import sys

    from conftest import ROOT, run_train

    sweep = tmp_path / "sweep"
    r = run_train(["-m", "model=tiny,tiny_moirai2,tiny_moe", "pattern=full,head_only,lora", "hardware=cpu",
                   "data.num_columns=2", "data.num_days=20", "context_length=32", "prediction_length=16",
                   "patch_size=16", "batch_size=8", "steps_per_epoch=2", "epochs=1", "warmup_steps=0",
                   "val_max_windows=16", "eval.max_windows=8", "eval.num_samples=10", "lr=1e-3",
                   "hardware.progress_bar_refresh=0", f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    assert len(metrics) == 9 and all(m["status"] == "completed" for m in metrics)
    for m in metrics:
        if m["pattern"] == "lora":  # trainable: rank x (in + out) per adapted attention projection
            module = random_module(compose_cfg([f"model={m['model']}"]).model)
            expected = sum(8 * (sub.in_features + sub.out_features) for name, sub in module.named_modules()
                           if isinstance(sub, torch.nn.Linear) and ".self_attn." in f".{name}."
                           and name.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj", "out_proj"))
            assert m["trainable_params"] == expected < m["total_params"]
    # ranked by the validation loss here (the default, best_monitored, follows each job's monitor)
    a = subprocess.run([sys.executable, str(ROOT / "analyze.py"), str(sweep), "--metric", "best_val_loss"],
                       capture_output=True, text=True, timeout=300)
    assert a.returncode == 0, a.stderr
    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 and {row["family"] for row in rows} == {"moirai1", "moirai2", "moe"}
    losses = [float(row["best_val_loss"]) for row in rows]
    assert losses == sorted(losses)  # ranked
    assert (sweep / "plots" / "params_vs_metric.png").stat().st_size > 0
