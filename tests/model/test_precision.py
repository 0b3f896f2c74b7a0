"""The fast path keeps Moirai's mathematics: fp32 results equal uni2ts's own to float noise, and a short
bf16-mixed run reaches the fp32 run's validation loss within 1%.

(The same-batch loss through uni2ts's MoiraiFinetune vs moirai-ft's path is tests/model/test_parity_uni2ts.py.)
"""

from __future__ import annotations

import copy
import csv

import pytest
import torch
from conftest import compose_cfg
from uni2ts.loss.packed import PackedNLLLoss
from uni2ts.module.packed_scaler import PackedStdScaler

from moirai_ft.artifacts import HISTORY
from moirai_ft.data.prepare import prepare
from moirai_ft.config.schema import CompileMode
from moirai_ft.model.compat import SyncFreeStdScaler
from moirai_ft.model.fast_path import adamw_options, compile_forward, distribution_validation, use_fast_path
from moirai_ft.model.families.moirai1 import LOSS_FIELDS, MODEL_FIELDS
from moirai_ft.train.job import run_job
from moirai_ft.model.load import param_groups, random_module


@pytest.fixture(scope="module")
def tiny():
    cfg = compose_cfg()
    torch.manual_seed(0)
    module = random_module(cfg.model)
    batch = prepare(cfg).train.batch(torch.arange(cfg.batch_size))
    return cfg, module, batch


def _loss(module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    pred = module(**{k: batch[k] for k in MODEL_FIELDS})
    return PackedNLLLoss()(pred=pred, **{k: batch[k] for k in LOSS_FIELDS})


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def assert_same_gradients(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], rtol: float) -> None:
    """Per tensor, within rtol of the largest gradient anywhere: some gradients are zero in exact
    arithmetic (the attention bias between variates of a one-variate sample) and only float noise in
    practice, so an element-wise relative test would compare noise with noise."""
    assert actual.keys() == expected.keys()
    scale = max(g.abs().max() for g in expected.values())
    for name, grad in expected.items():
        torch.testing.assert_close(actual[name], grad, rtol=rtol, atol=rtol * float(scale), msg=name)


def test_fast_path_gives_uni2ts_loss_and_gradients_in_fp32(tiny):
    _, module, batch = tiny
    reference = copy.deepcopy(module)
    fast = use_fast_path(copy.deepcopy(module))
    assert type(fast.scaler) is not type(reference.scaler)  # the swap happened
    ref_loss = _loss(reference, batch)  # uni2ts as shipped, argument validation on
    ref_loss.backward()
    with distribution_validation(False):
        fast_loss = _loss(fast, batch)
    fast_loss.backward()
    torch.testing.assert_close(fast_loss, ref_loss, rtol=1e-6, atol=0)
    assert_same_gradients(_grads(fast), _grads(reference), rtol=1e-5)
    # the weights and what save_pretrained writes are untouched
    assert fast.state_dict().keys() == reference.state_dict().keys()


def test_sync_free_scaler_matches_uni2ts_with_padding_and_packing():
    g = torch.Generator().manual_seed(1)
    target = torch.randn(3, 12, 8, generator=g, dtype=torch.float64)
    observed = torch.rand(3, 12, 8, generator=g) > 0.2
    # two packed samples per row and trailing padding (sample_id 0): both branches of the scaler
    sample_id = torch.tensor([1] * 5 + [2] * 5 + [0] * 2).repeat(3, 1)
    variate_id = torch.tensor([0, 0, 1, 1, 1] * 2 + [0, 0]).repeat(3, 1)
    loc, scale = PackedStdScaler()._get_loc_scale(target, observed, sample_id, variate_id)
    fast_loc, fast_scale = SyncFreeStdScaler()._get_loc_scale(target, observed, sample_id, variate_id)
    assert torch.equal(fast_loc, loc) and torch.equal(fast_scale, scale)
    assert (loc[:, -2:] == 0).all() and (scale[:, -2:] == 1).all()  # the padding branch was exercised


def test_fused_adamw_makes_the_default_adamw_updates(tiny):
    """The same gradients, applied three times (bias correction changes each step), move both
    optimizers' weights alike. (Recomputing gradients from each model's own weights would instead
    measure how Adam's normalised first steps amplify float noise.)"""
    _, module, batch = tiny
    options = adamw_options(torch.device("cpu"))
    if "fused" not in options:
        pytest.skip(f"torch {torch.__version__} has no fused AdamW on the CPU")
    source = copy.deepcopy(module)
    with distribution_validation(False):
        _loss(source, batch).backward()
    models = [copy.deepcopy(source), copy.deepcopy(source)]
    for m in models:
        for p, src in zip(m.parameters(), source.parameters()):
            p.grad = None if src.grad is None else src.grad.clone()
    optimizers = [
        torch.optim.AdamW(param_groups(m, 0.1), lr=1e-3, betas=(0.9, 0.98), eps=1e-6, **kwargs)
        for m, kwargs in zip(models, ({"foreach": False}, options))
    ]
    for _ in range(3):
        for opt in optimizers:
            opt.step()  # the gradients stay in .grad: the same ones every step
    moved = 0
    for (name, a), (_, b), (_, start) in zip(*(m.named_parameters() for m in (*models, source))):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7, msg=name)
        moved += int(not torch.equal(a, start))
    assert moved > 0  # the steps did update the weights


def test_compiled_forward_is_the_module_forward(tiny):
    """hardware.compile's capture of the model (one graph, no break) computes uni2ts's loss and gradients;
    inductor's kernels themselves are checked on the GPU by the benchmark's validation loss."""
    _, module, batch = tiny
    eager, captured = use_fast_path(copy.deepcopy(module)), use_fast_path(copy.deepcopy(module))
    torch._dynamo.reset()
    forward = compile_forward(captured, CompileMode.default, backend="aot_eager")
    with distribution_validation(False):
        eager_loss = _loss(eager, batch)
        compiled_loss = PackedNLLLoss()(pred=forward(batch), **{k: batch[k] for k in LOSS_FIELDS})
    eager_loss.backward()
    compiled_loss.backward()
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-6, atol=0)
    assert_same_gradients(_grads(captured), _grads(eager), rtol=1e-5)
    torch._dynamo.reset()


def _val_losses(job_dir) -> list[float]:
    with open(job_dir / HISTORY) as f:
        return [float(row["val_loss"]) for row in csv.DictReader(f)]


def test_a_short_bf16_run_reaches_the_fp32_validation_loss(tmp_path):
    """hardware=gpu's bf16-mixed, on the CPU's bf16 autocast: 20 steps that clearly move the loss.

    Adam's first steps are normalised, so float noise in a gradient moves weights by whole steps and two
    runs drift apart as the loss falls; at this learning rate the drift between precisions stayed under
    0.7% over seeds 0-2 (0.09% at seed 0), while the loss itself falls by about 9%."""
    runs = {}
    for precision in ("32-true", "bf16-mixed"):
        cfg = compose_cfg(["steps_per_epoch=10", "epochs=2", "batch_size=8", "lr=1e-4",
                           f"hardware.precision={precision}", "hardware.progress_bar_refresh=0"])
        job_dir = tmp_path / precision
        metrics = run_job(cfg, job_dir)
        assert metrics["status"] == "completed" and metrics["steps_run"] == 20
        runs[precision] = _val_losses(job_dir)
    fp32, bf16 = runs["32-true"], runs["bf16-mixed"]
    assert fp32[-1] < 0.95 * fp32[0]  # training did move the loss: the comparison is not vacuous
    assert bf16[0] != fp32[0]  # bf16 really ran in lower precision
    assert abs(bf16[-1] - fp32[-1]) <= 0.01 * abs(fp32[-1]), (fp32, bf16)
