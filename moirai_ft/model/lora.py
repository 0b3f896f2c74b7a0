"""pattern=lora: peft LoRA adapters injected in place into a family's module (so the module keeps its
class, its attributes and its forward), the base weights frozen, and the selected weights saved merged
as a plain save_pretrained directory that the family's uni2ts forecast class loads.

Targets (conf/pattern/lora.yaml): `target_modules`, the nn.Linear names inside each transformer layer's
`self_attn` (q_proj, k_proj, v_proj, out_proj), and with `ffn=true` every feed-forward nn.Linear (fc1,
fc2, fc_gate; the MoE experts' included). The same names exist in every Moirai family's encoder.

peft (and with it transformers, about 0.7 s) is imported only when a job injects adapters: the other
patterns never load it (moirai_ft/imports.py).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from moirai_ft.errors import UserError

FFN_LINEARS = ("fc1", "fc2", "fc_gate")


def lora_targets(module: nn.Module, pattern_cfg: DictConfig) -> list[str]:
    """Full names of the nn.Linear layers the pattern adapts."""
    wanted = set(pattern_cfg.target_modules)
    targets = []
    for name, sub in module.named_modules():
        if not isinstance(sub, nn.Linear):
            continue
        path, last = f".{name}.", name.rsplit(".", 1)[-1]
        if (".self_attn." in path and last in wanted) or (pattern_cfg.ffn and ".ffn." in path and last in FFN_LINEARS):
            targets.append(name)
    if not targets:
        raise UserError(
            f"pattern.target_modules={list(pattern_cfg.target_modules)} names no attention projection of this model; "
            "use some of q_proj, k_proj, v_proj, out_proj (or pattern.ffn=true)"
        )
    return targets


def inject_lora(module: nn.Module, pattern_cfg: DictConfig) -> nn.Module:
    """pattern=lora's adapter (moirai_ft/model/patterns.py): adapters on the targets, which the pattern's
    `train` then names as the only parameters that train. The module is changed in place and returned."""
    if pattern_cfg.rank < 1 or pattern_cfg.alpha <= 0 or not 0 <= pattern_cfg.dropout < 1:
        raise UserError(
            f"pattern=lora needs pattern.rank >= 1, pattern.alpha > 0 and pattern.dropout in [0, 1) "
            f"(got rank={pattern_cfg.rank}, alpha={pattern_cfg.alpha}, dropout={pattern_cfg.dropout})"
        )
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=int(pattern_cfg.rank), lora_alpha=float(pattern_cfg.alpha), lora_dropout=float(pattern_cfg.dropout),
        target_modules=lora_targets(module, pattern_cfg), bias="none",
    )
    inject_adapter_in_model(config, module)
    return module


def _lora_layer_type() -> type | None:
    """peft's LoraLayer, or None when peft was never imported: then no module has adapters."""
    if "peft" not in sys.modules:
        return None
    from peft.tuners.lora import LoraLayer

    return LoraLayer


def _lora_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    layer_type = _lora_layer_type()
    return [] if layer_type is None else [(n, s) for n, s in module.named_modules() if isinstance(s, layer_type)]


def has_lora(module: nn.Module) -> bool:
    return bool(_lora_layers(module))


def _unload(module: nn.Module, merge: bool) -> nn.Module:
    """Each LoRA layer replaced by its base layer, merged first (peft's merge: W + scale * B A) if asked."""
    for name, sub in _lora_layers(module):
        if merge:
            sub.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent_name), child, sub.get_base_layer())
    return module


def merged(module: nn.Module) -> nn.Module:
    """A plain copy of the module with the adapters merged into its weights (the module itself unchanged)."""
    return _unload(copy.deepcopy(module), merge=True) if has_lora(module) else module


def save_plain(module: nn.Module, directory: Path) -> None:
    """save_pretrained of the module as its family's plain module (adapters merged)."""
    merged(module).save_pretrained(directory)


def adapter_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the adapters' own weights (every lora_A and lora_B; {} without adapters): what `load_plain`
    puts back so a new start (an out-of-memory retry) is the first start again, not a half-trained A."""
    return {k: v.detach().clone() for k, v in module.state_dict().items() if "lora_" in k}


def load_plain(module: nn.Module, state: dict[str, torch.Tensor], adapters: dict[str, torch.Tensor] | None = None) -> None:
    """Load a plain state dict (save_plain's) into the module. With adapters: the weights go to the base
    layers and every adapter's B is zeroed, so the module computes exactly the plain weights; `adapters`
    (adapter_state's) then sets every A, and B, to the values they started from: zeroing B alone would
    leave A with what the last training run made of it."""
    if not has_lora(module):
        module.load_state_dict(state)
        return
    renamed = {}
    lora_layers = {name for name, _ in _lora_layers(module)}
    for key, value in state.items():
        layer, _, leaf = key.rpartition(".")
        renamed[f"{layer}.base_layer.{leaf}" if layer in lora_layers else key] = value
    missing, unexpected = module.load_state_dict(renamed, strict=False)
    if unexpected or any("lora_" not in k for k in missing):
        raise RuntimeError(f"state does not fit the module: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        for name in lora_layers:
            for b in module.get_submodule(name).lora_B.values():
                b.weight.zero_()
    if adapters:
        missing, unexpected = module.load_state_dict(adapters, strict=False)
        if unexpected:
            raise RuntimeError(f"adapter state does not fit the module: unexpected {unexpected[:3]}")
