"""Building or loading a MoiraiModule, fine-tuning patterns, and AdamW parameter groups."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from omegaconf import DictConfig
from torch import nn
from uni2ts.distribution import (
    LogNormalOutput,
    MixtureOutput,
    NegativeBinomialOutput,
    NormalFixedScaleOutput,
    StudentTOutput,
)
from uni2ts.model.moirai import MoiraiModule
from uni2ts.module.norm import RMSNorm
from uni2ts.module.position import BinaryAttentionBias, LearnedEmbedding, LearnedProjection
from uni2ts.module.ts_embed import MultiInSizeLinear, MultiOutSizeLinear

from moirai_ft.config.schema import ModelInit, PatternName
from moirai_ft.errors import UserError
from moirai_ft.weights import resolve_checkpoint


def random_module(model_cfg: DictConfig) -> MoiraiModule:
    """A randomly initialised MoiraiModule with the architecture of Moirai 1.1-R (mixture output)."""
    return MoiraiModule(
        distr_output=MixtureOutput(
            [StudentTOutput(), NormalFixedScaleOutput(), NegativeBinomialOutput(), LogNormalOutput()]
        ),
        d_model=model_cfg.d_model,
        num_layers=model_cfg.num_layers,
        patch_sizes=tuple(model_cfg.patch_sizes),
        max_seq_len=model_cfg.max_seq_len,
        attn_dropout_p=model_cfg.attn_dropout_p,
        dropout_p=model_cfg.dropout_p,
        scaling=True,
    )


def _looks_local(checkpoint: str) -> bool:
    return checkpoint.startswith((".", "/", "~")) or os.path.exists(checkpoint) or checkpoint.count("/") != 1


def load_module(model_cfg: DictConfig) -> MoiraiModule:
    """The model the job starts from: `model.init=random`, or pretrained weights from
    `model.checkpoint` (a hub id such as Salesforce/moirai-1.1-R-small, or a local directory).

    Never falls back to random weights: an unreachable hub is a UserError naming the two ways out.
    """
    if model_cfg.init == ModelInit.random:
        return random_module(model_cfg)
    checkpoint = model_cfg.checkpoint
    if not checkpoint:
        raise UserError(
            f"model={model_cfg.name} has no checkpoint: set model.checkpoint=<hub id or local dir> "
            "or model.init=random"
        )
    checkpoint = os.path.expanduser(str(checkpoint))
    if _looks_local(checkpoint):
        path = resolve_checkpoint(Path(checkpoint))  # a job directory: its checkpoints/best
        if not path.is_dir():
            raise UserError(
                f"model.checkpoint={checkpoint} is not a directory; point it at a directory written by "
                "MoiraiModule.save_pretrained (config.json + model.safetensors)"
            )
        if not (path / "config.json").is_file() or not any(
            (path / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")
        ):
            raise UserError(
                f"model.checkpoint={checkpoint} is not a Moirai checkpoint (needs config.json and "
                "model.safetensors, as written by MoiraiModule.save_pretrained)"
            )
        try:
            return MoiraiModule.from_pretrained(str(path))
        except Exception as e:  # corrupted weights, wrong architecture: one line, not a traceback
            raise UserError(
                f"model.checkpoint={checkpoint} could not be loaded ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                "re-download or re-save it"
            ) from e
    try:  # the local hub cache first: no network needed for weights fetched before
        return MoiraiModule.from_pretrained(checkpoint, local_files_only=True)
    except Exception:
        pass
    if not _hub_reachable():
        raise UserError(
            f"cannot reach the Hugging Face hub to fetch {checkpoint}; download it elsewhere and pass "
            "model.checkpoint=<local dir>, or train from scratch with model.init=random"
        )
    try:
        return MoiraiModule.from_pretrained(checkpoint)
    except Exception as e:
        raise UserError(
            f"cannot fetch {checkpoint} from the Hugging Face hub ({type(e).__name__}); check the id, or "
            "pass model.checkpoint=<local dir>, or train from scratch with model.init=random"
        ) from e


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """A quick TCP check, so an offline machine gets the message at once instead of after the hub
    client's retries (about 30 s)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def apply_pattern(module: nn.Module, pattern: str) -> None:
    """Freeze parameters by fine-tuning pattern, with uni2ts's semantics:
    full trains everything, freeze_ffn freezes every parameter with `ffn` in its name,
    head_only trains only `param_proj` (the distribution head)."""
    pattern = PatternName(pattern) if pattern in PatternName._value2member_map_ else pattern
    if pattern not in PatternName._value2member_map_:
        raise UserError(f"unknown pattern {pattern!r}; choose one of {[p.value for p in PatternName]}")
    for name, p in module.named_parameters():
        if pattern == PatternName.full:
            p.requires_grad_(True)
        elif pattern == PatternName.freeze_ffn:
            p.requires_grad_("ffn" not in name)
        else:
            p.requires_grad_("param_proj" in name)


_DECAY = (LearnedProjection, MultiInSizeLinear, MultiOutSizeLinear, nn.Linear)
_NO_DECAY = (BinaryAttentionBias, LearnedEmbedding, RMSNorm, nn.Embedding, nn.LayerNorm)


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """uni2ts's AdamW grouping: weights of linear-like layers decay; biases, norms and embeddings don't.
    Only trainable parameters are included; every one lands in exactly one group."""
    decay: dict[str, nn.Parameter] = {}
    no_decay: dict[str, nn.Parameter] = {}
    for mn, m in module.named_modules():
        for pn, p in m.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            fpn = f"{mn}.{pn}" if mn else pn
            if pn.endswith("bias") or isinstance(m, _NO_DECAY):
                no_decay[fpn] = p
            elif isinstance(m, _DECAY):
                decay[fpn] = p
            else:
                raise RuntimeError(f"parameter {fpn} of {type(m).__name__} has no decay rule")
    return [
        {"params": [decay[k] for k in sorted(decay)], "weight_decay": weight_decay},
        {"params": [no_decay[k] for k in sorted(no_decay)], "weight_decay": 0.0},
    ]


def count_params(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, total


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the trainable parameters: enough to restore the best weights."""
    return {n: p.detach().to("cpu", copy=True) for n, p in module.named_parameters() if p.requires_grad}
