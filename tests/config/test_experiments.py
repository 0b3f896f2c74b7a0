"""The seed plan's twelve experiments (its section 3) and stage presets (its EXECUTION_ORDER) as configs."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONF, ROOT, compose_cfg, run_train

# The specification, transcribed from ../shared/seed (section 3, EXPERIMENTS): pretrained -> model.
SEED = {
    "small_full_lr5e6": dict(model="small", pattern="full", lr=5e-6, epochs=5, batch_size=64, patience=3, warmup_steps=50),
    "small_full_lr1e5": dict(model="small", pattern="full", lr=1e-5, epochs=5, batch_size=64, patience=3, warmup_steps=50),
    "small_freeze_lr1e5": dict(model="small", pattern="freeze_ffn", lr=1e-5, epochs=10, batch_size=64, patience=5, warmup_steps=100),
    "small_freeze_lr2e5": dict(model="small", pattern="freeze_ffn", lr=2e-5, epochs=10, batch_size=64, patience=5, warmup_steps=100),
    "small_head_lr5e5": dict(model="small", pattern="head_only", lr=5e-5, epochs=20, batch_size=64, patience=8, warmup_steps=50),
    "small_head_lr1e4": dict(model="small", pattern="head_only", lr=1e-4, epochs=20, batch_size=64, patience=8, warmup_steps=50),
    "base_full_lr2e6": dict(model="base", pattern="full", lr=2e-6, epochs=3, batch_size=32, patience=2, warmup_steps=100),
    "base_full_lr5e6": dict(model="base", pattern="full", lr=5e-6, epochs=3, batch_size=32, patience=2, warmup_steps=100),
    "base_freeze_lr5e6": dict(model="base", pattern="freeze_ffn", lr=5e-6, epochs=5, batch_size=32, patience=3, warmup_steps=150),
    "base_freeze_lr1e5": dict(model="base", pattern="freeze_ffn", lr=1e-5, epochs=5, batch_size=32, patience=3, warmup_steps=150),
    "base_head_lr2e5": dict(model="base", pattern="head_only", lr=2e-5, epochs=15, batch_size=32, patience=6, warmup_steps=100),
    "base_head_lr5e5": dict(model="base", pattern="head_only", lr=5e-5, epochs=15, batch_size=32, patience=6, warmup_steps=100),
}
EXECUTION_ORDER = [
    "small_head_lr5e5", "small_head_lr1e4", "small_freeze_lr1e5", "small_freeze_lr2e5", "small_full_lr5e6", "small_full_lr1e5",
    "base_head_lr2e5", "base_head_lr5e5", "base_freeze_lr5e6", "base_freeze_lr1e5", "base_full_lr2e6", "base_full_lr5e6",
]


def seed_values(cfg) -> dict:
    return dict(model=cfg.model.name, pattern=str(getattr(cfg.pattern.name, "value", cfg.pattern.name)), lr=cfg.lr,
                epochs=cfg.epochs, batch_size=cfg.batch_size, patience=cfg.patience, warmup_steps=cfg.warmup_steps)


def test_the_twelve_experiment_files_are_the_seeds():
    names = {p.stem for p in (CONF / "experiment").glob("*.yaml") if p.stem.startswith(("small_", "base_"))}
    assert names == set(SEED)


@pytest.mark.parametrize("name", list(SEED))
def test_experiment_composes_to_the_seed_values_and_changes_nothing_else(name):
    spec = SEED[name]
    cfg = compose_cfg([f"experiment={name}"], tiny=False)
    assert seed_values(cfg) == spec
    # a pure delta: the same values given as plain overrides compose to the identical config
    plain = compose_cfg([f"model={spec['model']}", f"pattern={spec['pattern']}"]
                        + [f"{k}={spec[k]}" for k in ("lr", "epochs", "batch_size", "patience", "warmup_steps")], tiny=False)
    assert OmegaConf.to_container(cfg, resolve=True) == OmegaConf.to_container(plain, resolve=True)


def test_command_line_overrides_beat_an_experiment():
    cfg = compose_cfg(["experiment=base_head_lr5e5", "model=tiny", "lr=3e-4"], tiny=False)
    assert (cfg.model.name, cfg.lr, cfg.epochs) == ("tiny", 3e-4, SEED["base_head_lr5e5"]["epochs"])


def _preset(name: str) -> list[str]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"sweep={name}"], return_hydra_config=True)
    return str(cfg.hydra.sweeper.params.experiment).split(",")


def test_stage_presets_run_the_seeds_execution_order():
    small, base = _preset("small_stage"), _preset("base_stage")
    assert small == [e for e in EXECUTION_ORDER if e.startswith("small_")]
    assert base == [e for e in EXECUTION_ORDER if e.startswith("base_")]
    assert _preset("all") == small + base == EXECUTION_ORDER


def test_cfg_job_prints_the_seed_values():
    name = "base_freeze_lr1e5"
    out = run_train([f"experiment={name}", "--cfg", "job"], cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert seed_values(OmegaConf.create(out.stdout)) == SEED[name]
