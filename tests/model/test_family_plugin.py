"""A fourth model family added from outside the package: this one file defines it (a module class of its
own, registered by subclassing ModelFamily), a conf/model file in a directory of the test's own names it by
this module's path, and a job trains it one step and evaluates it, with no edit to moirai_ft/."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import nn
from uni2ts.model.moirai import MoiraiModule

from conftest import CONF, TINY
from moirai_ft.model.families import family_of, family_of_module
from moirai_ft.model.families.moirai1 import Moirai1
from moirai_ft.model.family import FAMILIES
from moirai_ft.train.job import run

CALLS = {"loss": 0, "forecast": 0}


class FourthModule(MoiraiModule, coders=MoiraiModule._hub_mixin_coders):
    """Its own module class: the family is found from a module by class (family_of_module)."""


class Fourth(Moirai1):
    name = "fourth"
    title = "Fourth (tests)"
    module_class = FourthModule

    def random_module(self, model_cfg: DictConfig) -> nn.Module:
        module = super().random_module(model_cfg)
        module.__class__ = FourthModule
        return module

    def loss(self, module, batch):
        CALLS["loss"] += 1
        return super().loss(module, batch)

    def batch_paths(self, module, windows, idx, num_samples):
        CALLS["forecast"] += 1
        return super().batch_paths(module, windows, idx, num_samples)


# conf/model/fourth.yaml, as a user would add it: no schema of the package's, the family by module path
MODEL_YAML = f"""\
name: fourth
family: {__name__}
checkpoint: null
init: random
batch_size: 64
d_model: 64
num_layers: 2
patch_sizes: [8, 16, 32, 64, 128]
max_seq_len: 512
max_dim: 128
attn_dropout_p: 0.0
dropout_p: 0.0
patch_size: 16
"""


def test_a_family_from_one_module_outside_the_package_trains_a_step_and_is_evaluated(tmp_path: Path) -> None:
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "fourth.yaml").write_text(MODEL_YAML)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=TINY + [
            f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "model=fourth", "steps_per_epoch=1",
            "eval.num_samples=4", "eval.max_windows=4", "eval.plot_windows=0"])
    assert FAMILIES["fourth"] is family_of(cfg.model) and isinstance(family_of(cfg.model), Fourth)
    metrics = run(cfg, tmp_path / "job")
    assert metrics["status"] == "completed", metrics.get("error")
    assert metrics["family"] == "fourth" and metrics["steps_run"] == 1
    assert CALLS["loss"] >= 2 and CALLS["forecast"] >= 2  # its objective trained and validated, its forecast tested
    assert metrics["test"]["mae"] > 0 and metrics["zero_shot_test"]["mae"] > 0
    best = family_of(cfg.model).from_pretrained(tmp_path / "job" / "checkpoints" / "best")
    assert type(best) is FourthModule and family_of_module(best) is FAMILIES["fourth"]
