"""The typed root config: a wrong key, type or value on train.py's command line is one line before anything
runs; warmup_steps as a fraction of the run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from lightning.pytorch.callbacks import LearningRateMonitor

from conftest import CONF, TINY, compose_cfg, run_train
from moirai_ft.config.precheck import check_command_line
from moirai_ft.train.schedulers import warmup_step_count
from moirai_ft.train.job import run_job


@pytest.mark.parametrize(
    "override",
    ["lr=abc", "patience=abc", "epochs=2.5", "steps_per_epoch=2.5", "batch_size=8.5", "warmup_steps=-1", "seed=x",
     "val_max_windows=0", "calibrate=cqr"],
)
def test_bad_root_value_is_one_line_naming_the_key_before_anything_runs(override: str, tmp_path: Path) -> None:
    key = override.split("=")[0]
    r = run_train(["experiment=quickstart", override], cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    named = lines[0].removeprefix("error: ").split()[0]
    assert named == key or named.startswith(f"{key}="), lines[0]  # the key itself, not eval.batch_size
    assert r.returncode == 2
    assert not list(tmp_path.rglob("metrics.json")) and not (tmp_path / "outputs").exists()


def test_every_value_of_a_sweep_is_checked_before_any_job(tmp_path: Path) -> None:
    args = ["-m", "experiment=quickstart", "lr=1e-3,abc", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    assert check_command_line(args, CONF) == "lr must be a number (got abc)"
    assert check_command_line(["-m", "epochs=range(1,3)", "lr=1e-3,2e-3", "seed=1,x"], CONF).startswith(
        "seed must be a whole number")
    assert check_command_line(["-m", "epochs=1,2", "model=tiny,small", "lr=1e-3,2e-3"], CONF) is None
    assert "add -m" in check_command_line(["lr=1e-3,2e-3"], CONF)  # a sweep without -m


@pytest.mark.parametrize(
    "override,message",
    [
        ("learning_rate=1e-3", "unknown config key learning_rate"),
        ("model.checkpont=x", "unknown config key model.checkpont; did you mean model.checkpoint?"),
        ("pattern.name=all", "pattern.name must be one of: freeze_ffn, full, head_only, lora (got all)"),
        ("resume=maybe", "resume must be true or false (got maybe)"),
        ("calibrate=cqr", "calibrate must be one of: none, conformal (got cqr)"),
        ("blend=yes_please", "blend must be true or false (got yes_please)"),
        ("blend_grid=0.5", "blend_grid must be a list, e.g. [0,0.5,1] (got 0.5)"),
        ("blend_grid=[0.5,1]", "blend_grid must hold weights in [0, 1], among them 0 (zero-shot) and 1"),
        ("calibrate=conformal", None),
        ("blend=true", None),
        ("eval.batch_size=2.5", "eval.batch_size must be a whole number (got 2.5)"),
        ("warmup_steps=1.5", "warmup_steps must be a number of steps >= 0 or a fraction of the run in (0, 1)"),
        ("val_check_interval=0.5", None),
        ("val_check_interval=10", None),
        ("warmup_steps=0.1", None),
    ],
)
def test_command_line_check_names_the_key(override: str, message: str | None) -> None:
    result = check_command_line(["experiment=quickstart", override], CONF)
    assert result == message if message is None else result.startswith(message), result


def test_typed_root_keeps_int_steps_and_float_fractions_apart() -> None:
    assert isinstance(compose_cfg(["val_check_interval=10"]).val_check_interval, int)
    assert isinstance(compose_cfg(["val_check_interval=0.5"]).val_check_interval, float)
    assert isinstance(compose_cfg(["warmup_steps=5"]).warmup_steps, int)
    assert isinstance(compose_cfg([], tiny=False).warmup_steps, float)  # the default is a fraction of the run


def test_warmup_fraction_counts_steps_of_the_run() -> None:
    total = 1000
    assert warmup_step_count(0.05, total) == total // 20
    assert warmup_step_count(0.1, total) == total // 10
    assert warmup_step_count(0.001, 10) == 1  # a run with steps gets at least one warmup step
    assert warmup_step_count(0.05, 0) == 0  # epochs=0: no training, no warmup
    assert warmup_step_count(7, total) == 7  # an int is steps


def test_short_run_with_the_default_warmup_trains_and_warms_up(tmp_path: Path) -> None:
    """`epochs=1 steps_per_epoch=50` with the default warmup: refused while it was 100 steps."""
    overrides = [o for o in TINY if not o.startswith("warmup_steps=")]
    cfg = compose_cfg(overrides + ["epochs=1", "steps_per_epoch=50", "batch_size=8", "hardware.log_every_n_steps=1",
                                   "val_max_windows=8", "eval.max_windows=4", "eval.num_samples=10"], tiny=False)
    # Lightning's own monitor logs the lr every step into logs/metrics.csv
    metrics = run_job(cfg, tmp_path, extra_callbacks={"lr": LearningRateMonitor(logging_interval="step")})
    assert metrics["status"] == "completed" and metrics["steps_run"] == 50
    warmup = warmup_step_count(cfg.warmup_steps, 50)
    assert 0 < warmup < 50
    log = pd.read_csv(tmp_path / "logs" / "metrics.csv")
    lrs = log.dropna(subset=[c for c in log.columns if c.startswith("lr-")]).set_index("step")
    lr = lrs[[c for c in log.columns if c.startswith("lr-")][0]]
    assert len(lr) == 50
    for step, value in lr.items():  # the lr the step trained with: step / warmup of the peak, then the peak
        assert value == pytest.approx(cfg.lr * min(1.0, step / warmup)), step


def test_importing_the_config_registers_nothing_and_register_stores_every_schema() -> None:
    """Registration with Hydra's ConfigStore is an explicit call at the entry points (moirai_ft/config/store.py),
    not an effect of importing a config module."""
    import subprocess
    import sys

    script = (
        "import importlib, pkgutil\n"
        "from hydra.core.config_store import ConfigStore\n"
        "import moirai_ft.config as config\n"
        "for m in pkgutil.iter_modules(config.__path__):\n"
        "    importlib.import_module('moirai_ft.config.' + m.name)\n"
        "repo = ConfigStore.instance().repo\n"
        "print(sorted(k for k in repo if k.endswith('_schema.yaml')), 'schema' in repo)\n"
        "config.store.register()\n"
        "print(sorted(k for k in repo if k.endswith('_schema.yaml')), sorted(repo['schema']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=CONF.parent, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, after = proc.stdout.strip().splitlines()
    assert before == "[] False"
    assert after.startswith("['predict_schema.yaml', 'root_schema.yaml'] [") and "'pattern.yaml'" in after
