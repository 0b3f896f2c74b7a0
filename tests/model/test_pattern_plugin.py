"""A fine-tuning pattern added by config alone: one conf/pattern file in a directory of the test's own (on
hydra.searchpath) says what trains, and a job trains it one step, with no edit to moirai_ft/. The shipped
patterns' definitions (conf/pattern) are checked against what each trained before they were config."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CONF, TINY, compose_cfg
from moirai_ft.errors import UserError
from moirai_ft.model.load import random_module
from moirai_ft.model.patterns import apply_pattern
from moirai_ft.train.job import run

# conf/pattern/attn_only.yaml, as a user would add it: the attention layers train, their output
# projections (a glob on parameter names) and everything else stay frozen
ATTN_ONLY = """\
defaults:
  - /schema/pattern@_here_
  - _self_
name: attn_only
train: ["*.self_attn.*"]
freeze: ["*.out_proj.*"]
"""


def test_a_pattern_from_one_conf_file_outside_the_package_trains_a_step(tmp_path: Path) -> None:
    (tmp_path / "pattern").mkdir()
    (tmp_path / "pattern" / "attn_only.yaml").write_text(ATTN_ONLY)
    cfg = compose_cfg([f"hydra.searchpath=[file://{tmp_path}]", "pattern=attn_only", "steps_per_epoch=1",
                       "eval.num_samples=4", "eval.max_windows=4", "eval.plot_windows=0"])
    module = apply_pattern(random_module(cfg.model), cfg.pattern)
    trained = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trained and all(".self_attn." in n and ".out_proj." not in n for n in trained)
    assert any(".self_attn.out_proj." in n for n, _ in module.named_parameters())  # frozen by `freeze`
    metrics = run(cfg, tmp_path / "job")
    assert metrics["status"] == "completed", metrics.get("error")
    assert metrics["pattern"] == "attn_only" and metrics["steps_run"] == 1
    assert metrics["trainable_params"] == sum(p.numel() for n, p in module.named_parameters() if n in trained)


def _before_config(family, pattern: str, name: str) -> bool:
    """What each shipped pattern trained when the package defined it by name (ModelFamily.trains, before)."""
    if pattern == "full":
        return True
    if pattern == "head_only":
        return name.startswith(tuple(f"{h}." for h in family.head))
    return ".ffn." not in f".{name}"  # freeze_ffn


@pytest.mark.parametrize("model", ["tiny", "tiny_moe", "tiny_moirai2"])
def test_the_shipped_patterns_train_what_they_trained_before(model: str) -> None:
    from moirai_ft.model.families import family_of

    cfg = compose_cfg([f"model={model}"])
    family = family_of(cfg.model)
    for pattern in ("full", "freeze_ffn", "head_only"):
        module = apply_pattern(random_module(cfg.model), compose_cfg([f"model={model}", f"pattern={pattern}"]).pattern)
        for name, p in module.named_parameters():
            assert p.requires_grad == _before_config(family, pattern, name), (pattern, name)


def test_a_pattern_entry_that_names_nothing_is_one_line() -> None:
    cfg = compose_cfg(["pattern=head_only", "pattern.train=[heads]"])
    with pytest.raises(UserError, match=r"^pattern=head_only: pattern.train entry 'heads' matches no parameter"):
        apply_pattern(random_module(cfg.model), cfg.pattern)


def test_train_py_accepts_a_pattern_from_its_search_path_and_lists_it_on_a_typo(tmp_path: Path) -> None:
    from moirai_ft.config.precheck import check_command_line

    (tmp_path / "pattern").mkdir()
    (tmp_path / "pattern" / "attn_only.yaml").write_text(ATTN_ONLY)
    search = f"hydra.searchpath=[file://{tmp_path}]"
    assert check_command_line(TINY + [search, "pattern=attn_only"], CONF) is None
    assert check_command_line(TINY + [search, "pattern=attn_onyl"], CONF) == (
        "unknown pattern 'attn_onyl'; choose one of: attn_only, freeze_ffn, full, head_only, lora")
    assert check_command_line(TINY + ["pattern=attn_only"], CONF).startswith("unknown pattern 'attn_only'")
