"""Loading (local save_pretrained dirs, hub unreachable), fine-tuning patterns and AdamW groups."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import compose_cfg, run_train
from moirai_ft.data.prepare import prepare
from moirai_ft.errors import UserError
from moirai_ft.train.finetuner import MoiraiFineTuner
from moirai_ft.model.load import load_module, param_groups, random_module
from moirai_ft.model.patterns import apply_pattern
from moirai_ft.data.windows import IndexBatches, index_loader


def test_pretrained_loading_from_a_local_save_pretrained_dir(tmp_path: Path) -> None:
    cfg = compose_cfg()
    saved = random_module(cfg.model)
    saved.save_pretrained(tmp_path / "ckpt")
    cfg = compose_cfg(["model.init=pretrained", f"model.checkpoint={tmp_path / 'ckpt'}"])
    loaded = load_module(cfg.model)
    assert type(loaded) is type(saved)
    a, b = saved.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_dir_that_is_not_moirai_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    cfg = compose_cfg(["model.init=pretrained", f"model.checkpoint={tmp_path}"])
    with pytest.raises(UserError, match="not a Moirai checkpoint"):
        load_module(cfg.model)


def test_missing_local_checkpoint_dir_is_refused(tmp_path: Path) -> None:
    cfg = compose_cfg(["model.init=pretrained", f"model.checkpoint={tmp_path / 'nope'}"])
    with pytest.raises(UserError, match="not a directory"):
        load_module(cfg.model)


def test_hub_unreachable_stops_at_once_with_the_two_ways_out(tmp_path: Path) -> None:
    # model=small is pretrained from the hub by default; this machine cannot reach it
    r = run_train(["model=small", "hardware=cpu", "data.num_columns=2", "data.num_days=20",
                   "context_length=64", "prediction_length=16", "patch_size=16",
                   f"hydra.run.dir={tmp_path / 'job'}"], cwd=tmp_path)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, r.stderr
    assert "model.checkpoint=<local dir>" in lines[0] and "model.init=random" in lines[0]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "job" / "training_history.csv").exists()
    assert not (tmp_path / "job" / "checkpoints").exists()


def _train_steps(pattern: str, steps: int = 4) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    cfg = compose_cfg([f"pattern={pattern}"])
    data = prepare(cfg)
    module = random_module(cfg.model)
    apply_pattern(module, pattern)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    order = IndexBatches(len(data.train), 8, True, 0, steps)
    ft = MoiraiFineTuner(module, data.train, data.val, order, lr=1e-2, weight_decay=0.1, scheduler="constant",
                         warmup_steps=0, total_steps=steps, min_lr_ratio=1.0)
    L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
              gradient_clip_val=1.0).fit(ft, index_loader(order))
    after = {n: p.detach().clone() for n, p in module.named_parameters()}
    return before, after


def test_head_only_changes_only_the_head() -> None:
    before, after = _train_steps("head_only")
    head = [n for n in before if "param_proj" in n]
    assert head and any(not torch.equal(before[n], after[n]) for n in head)
    for n in before:
        if "param_proj" not in n:
            assert torch.equal(before[n], after[n]), n  # bit-for-bit


def test_freeze_ffn_keeps_every_ffn_parameter() -> None:
    before, after = _train_steps("freeze_ffn")
    ffn = [n for n in before if "ffn" in n]
    assert ffn
    for n in ffn:
        assert torch.equal(before[n], after[n]), n
    assert any(not torch.equal(before[n], after[n]) for n in before if "ffn" not in n)


def test_param_groups_cover_every_trainable_parameter_once() -> None:
    module = random_module(compose_cfg().model)
    for pattern in ("full", "freeze_ffn", "head_only"):
        apply_pattern(module, pattern)
        groups = param_groups(module, 0.1)
        ids = [id(p) for g in groups for p in g["params"]]
        trainable = [id(p) for p in module.parameters() if p.requires_grad]
        assert sorted(ids) == sorted(trainable) and len(set(ids)) == len(ids)
        assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
        no_decay = {id(p) for p in groups[1]["params"]}
        for name, p in module.named_parameters():
            if p.requires_grad and name.endswith("bias"):
                assert id(p) in no_decay, name


def test_unknown_pattern_lists_the_allowed_ones() -> None:
    # a bare name is a shipped conf/pattern file (lora's included: its settings are in its file)
    with pytest.raises(UserError, match="freeze_ffn, full, head_only, lora"):
        apply_pattern(random_module(compose_cfg().model), "lorra")
