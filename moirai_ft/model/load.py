"""Building or loading a family's module (moirai_ft/model/families), and AdamW parameter groups (the
fine-tuning patterns: moirai_ft/model/patterns.py)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig
from torch import nn
from uni2ts.module.norm import RMSNorm
from uni2ts.module.position import BinaryAttentionBias, LearnedEmbedding, LearnedProjection
from uni2ts.module.ts_embed import FeatLinear, MultiInSizeLinear, MultiOutSizeLinear

from moirai_ft.config.presets import model_options
from moirai_ft.config.schema import ModelInit
from moirai_ft.errors import UserError, first_line
from moirai_ft.weights import resolve_checkpoint
from moirai_ft.model.families import checkpoint_family, family_of
from moirai_ft.model.family import ModelFamily


def random_module(model_cfg: DictConfig) -> nn.Module:
    """A randomly initialised module of the configured family and size."""
    return family_of(model_cfg).random_module(model_cfg)


def _looks_local(checkpoint: str) -> bool:
    return checkpoint.startswith((".", "/", "~")) or os.path.exists(checkpoint) or checkpoint.count("/") != 1


def load_module(model_cfg: DictConfig) -> nn.Module:
    """The model the job starts from: `model.init=random`, or pretrained weights from
    `model.checkpoint` (a hub id such as Salesforce/moirai-1.1-R-small, or a local directory), as the
    module of the config's family.

    Never falls back to random weights: an unreachable hub is a UserError naming the two ways out.
    """
    family = family_of(model_cfg)
    if model_cfg.init == ModelInit.random:
        return family.random_module(model_cfg)
    module = _load_pretrained(family, model_cfg)
    family.check_loaded(module, model_cfg)  # the preflight used the config's limits: they must be the weights'
    return module


def _load_pretrained(family: ModelFamily, model_cfg: DictConfig) -> nn.Module:
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
        _check_family(family, path, model_cfg.name)
        try:
            return family.from_pretrained(path)
        except Exception as e:  # corrupted weights, wrong architecture: one line, not a traceback
            raise UserError(
                f"model.checkpoint={checkpoint} could not be loaded ({type(e).__name__}: {first_line(e, 200)}); "
                "re-download or re-save it"
            ) from e
    try:  # the local hub cache first: no network needed for weights fetched before
        return family.from_pretrained(checkpoint, local_files_only=True)
    except Exception:
        pass
    if not _hub_reachable():
        raise UserError(
            f"cannot reach the Hugging Face hub to fetch {checkpoint}; download it elsewhere and pass "
            "model.checkpoint=<local dir>, or train from scratch with model.init=random"
        )
    try:
        return family.from_pretrained(checkpoint)
    except Exception as e:
        raise UserError(
            f"cannot fetch {checkpoint} from the Hugging Face hub ({type(e).__name__}); check the id, or "
            "pass model.checkpoint=<local dir>, or train from scratch with model.init=random"
        ) from e


def _check_family(family: ModelFamily, path: Path, model_name: str) -> None:
    """A directory written by another family's save_pretrained: one line naming both families."""
    found = checkpoint_family(path)
    if found is not None and found is not family:
        raise UserError(
            f"model.checkpoint={path} is a {found.title} checkpoint, but model={model_name} is {family.title}; "
            f"use a {found.title} model option ({', '.join(model_options(found.name))}) for it, or a {family.title} checkpoint"
        )


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


_DECAY = (LearnedProjection, MultiInSizeLinear, MultiOutSizeLinear, FeatLinear, nn.Linear)
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

