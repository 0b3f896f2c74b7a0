"""Fine-tuning patterns: which parameters a job trains, each defined by its conf/pattern/<name>.yaml alone.

A pattern's node (schema: PatternSchema in moirai_ft/config/schema.py) says it declaratively:
- `train`: the parameters that train, as parts of the model's family (`head`, `ffn`: ModelFamily.parts) or
  globs on parameter names (`*` is every parameter);
- `freeze`: of those, the ones that stay frozen (the same vocabulary);
- `adapter`: null, or the dotted path of a function (module, pattern node) -> module that adds parameters of
  its own first (pattern=lora: peft's adapters, moirai_ft/model/lora.py); `train` then names them like any other.

So full is `train: ["*"]`, freeze_ffn `train: ["*"], freeze: [ffn]`, head_only `train: [head]` (uni2ts's
semantics for Moirai 1.x, per family), lora `adapter: moirai_ft.model.lora.inject_lora, train: ["*.lora_*"]`.

ADDING A PATTERN: one conf/pattern/<name>.yaml (in conf/ or a directory on hydra.searchpath) with `name`,
`train` and `freeze`; one that adds parameters also names its `adapter` function (a module of its own) and,
with settings of its own, lists no schema or a schema of its own instead of `/schema/pattern`.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from hydra.utils import get_method
from omegaconf import DictConfig
from torch import nn

from moirai_ft.config.presets import pattern_option
from moirai_ft.errors import UserError
from moirai_ft.model.families import family_of_module
from moirai_ft.model.family import ModelFamily


def _matches(name: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatchcase(name, g) for g in globs)


def apply_pattern(module: nn.Module, pattern: DictConfig | str, family: ModelFamily | None = None) -> nn.Module:
    """Add the pattern's adapter (if any) and set which parameters train; returns the module to train (the same
    object, changed in place). `pattern` is conf/pattern's node as composed, or a shipped pattern's name."""
    if isinstance(pattern, str):
        pattern = pattern_option(pattern)
    if pattern.get("adapter"):
        try:
            add = get_method(str(pattern.adapter))
        except Exception as e:  # noqa: BLE001 - Hydra's import errors are several lines
            raise UserError(f"pattern.adapter={pattern.adapter} is not an importable function; "
                            "give its dotted path (package.module.function)") from e
        module = add(module, pattern)
    family = family or family_of_module(module)
    parts = family.parts()
    names = [name for name, _ in module.named_parameters()]
    globs: dict[str, tuple[str, ...]] = {}
    for key in ("train", "freeze"):
        entries = [str(e) for e in pattern.get(key) or ()]
        for entry in entries:  # a part name stands for its globs; anything else is a glob
            if not any(_matches(n, parts.get(entry, (entry,))) for n in names):
                raise UserError(
                    f"pattern={pattern.name}: pattern.{key} entry {entry!r} matches no parameter of {family.title}; "
                    f"name a part ({', '.join(parts)}) or a glob on its parameter names (`*` for all)"
                )
        globs[key] = tuple(g for e in entries for g in parts.get(e, (e,)))
    for name, p in module.named_parameters():
        p.requires_grad_(_matches(name, globs["train"]) and not _matches(name, globs["freeze"]))
    return module
