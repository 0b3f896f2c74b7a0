"""Every option of every config group composes, and the model/scheduler/hardware/data groups instantiate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from conftest import CONF, compose_cfg, shrink
from moirai_ft.config.schema import validate
from moirai_ft.data.prepare import prepare
from moirai_ft.errors import UserError
from moirai_ft.model.load import count_params, random_module
from moirai_ft.train.schedulers import build_scheduler

GROUPS = ["model", "pattern", "scheduler", "hardware", "data"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes(group: str) -> None:
    assert options(group), f"no options in conf/{group}"
    for option in options(group):
        extra = ["data.path=x.csv"] if (group, option) == ("data", "csv") else []
        cfg = compose_cfg([f"{group}={option}", *extra], tiny=False)
        assert OmegaConf.select(cfg, f"{group}.name") == option
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def test_top_level_keys_are_set_once_and_interpolated() -> None:
    cfg = compose_cfg(["model=base"], tiny=False)
    assert cfg.batch_size == 32  # the model's default batch size
    assert compose_cfg(["model=small"], tiny=False).batch_size == 64
    assert compose_cfg(["model=small", "batch_size=8"], tiny=False).batch_size == 8
    assert cfg.data.eval_stride == cfg.prediction_length
    cfg = compose_cfg(["model=small", "prediction_length=48"], tiny=False)
    assert cfg.data.eval_stride == 48


@pytest.mark.parametrize(
    "size,expected_millions", [("small", 14), ("base", 91), ("large", 311)]
)
def test_model_sizes_instantiate_with_moirai_architecture(size: str, expected_millions: int) -> None:
    cfg = compose_cfg([f"model={size}", "model.init=random"], tiny=False)
    module = random_module(cfg.model)
    _, total = count_params(module)
    assert abs(total / 1e6 - expected_millions) / expected_millions < 0.05
    del module


def test_scheduler_and_data_groups_instantiate() -> None:
    for name in options("scheduler"):
        cfg = compose_cfg([f"scheduler={name}"])
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
        build_scheduler(opt, cfg.scheduler.name, 2, 10, cfg.scheduler.min_lr_ratio)
    data = prepare(compose_cfg())
    assert len(data.train) > 0 and len(data.val) > 0 and len(data.test) > 0


def test_hardware_options_build_a_trainer(tmp_path: Path) -> None:
    from moirai_ft.train.fit import build_trainer

    for name in options("hardware"):
        cfg = compose_cfg([f"hardware={name}"])
        if cfg.hardware.accelerator == "gpu" and not torch.cuda.is_available():
            continue  # composes (above); a Trainer on a GPU needs one
        if name == "ddp":
            continue  # covered by tests/train/test_ddp.py with real processes
        trainer = build_trainer(cfg, tmp_path, {}, steps_per_epoch=4)
        assert trainer.max_epochs == cfg.epochs


@pytest.mark.parametrize(
    "override,group",
    [("pattern=freeze_all", "pattern"), ("scheduler=exponential", "scheduler"), ("model=huge", "model")],
)
def test_unknown_group_option_lists_the_allowed_ones(override: str, group: str) -> None:
    with pytest.raises(ConfigCompositionException) as e:
        compose_cfg([override])
    for option in options(group):
        assert option in str(e.value.__cause__ or e.value) or option in str(e.value)


def test_misspelt_key_fails_at_compose_time() -> None:
    with pytest.raises(ConfigCompositionException):
        compose_cfg(["model.checkpont=foo"])
    with pytest.raises(ConfigCompositionException):
        compose_cfg(["learning_rate=1e-5"])


def test_bad_enum_value_names_the_allowed_values() -> None:
    # (pattern.name is no enum since a pattern is any conf/pattern file: `pattern=freeze_all` lists the files,
    # tests/model/test_pattern_plugin.py)
    with pytest.raises(ConfigCompositionException) as e:
        compose_cfg(["scheduler.name=cosin"])
    text = str(e.value) + str(e.value.__cause__)
    assert "constant" in text and "cosine" in text and "linear" in text


@pytest.mark.parametrize(
    "key,value,fragment",
    [
        ("lr", 0.0, "lr must be > 0"),
        ("lr", -1e-5, "lr must be > 0"),
        ("patience", 0, "patience"),
        ("batch_size", 0, "batch_size"),
        ("context_length", 0, "context_length"),
        ("patch_size", 24, "patch_size"),
        ("val_check_interval", 1.5, "val_check_interval"),
    ],
)
def test_validate_names_the_key_to_change(key: str, value, fragment: str) -> None:
    cfg = shrink(compose_cfg(), **{key: value})
    with pytest.raises(UserError, match=fragment):
        validate(cfg)


def test_unknown_choice_on_the_command_line_is_one_line(tmp_path: Path) -> None:
    from conftest import run_train

    r = run_train(["-m", "pattern=full,freez_ffn", f"hydra.sweep.dir={tmp_path}"], cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: unknown pattern 'freez_ffn'; choose one of: freeze_ffn, full, head_only, lora"
    assert not any(tmp_path.iterdir())  # nothing ran, nothing written


def test_unknown_choice_accepts_every_real_option() -> None:
    from conftest import CONF
    from moirai_ft.config.precheck import unknown_choice

    for group in GROUPS:
        assert unknown_choice([f"{group}={o}" for o in options(group)], CONF) is None
    assert unknown_choice(["-m", "model=tiny,small", "lr=1e-3,1e-4", "hydra/launcher=basic"], CONF) is None
    assert "choose one of" in unknown_choice(["scheduler=step"], CONF)


def test_moe_schema_default_patch_sizes_are_the_released_checkpoints() -> None:
    """A model yaml of family moe that leaves patch_sizes out gets the released checkpoints' [16]."""
    from moirai_ft.config.schema import MoEModelSchema

    assert list(MoEModelSchema.patch_sizes) == [16]
    for option in ("moe_small", "moe_base"):
        assert list(compose_cfg([f"model={option}"]).model.patch_sizes) == list(MoEModelSchema.patch_sizes)
