"""The zero-shot baseline, computed once per sweep: every job of a `-m` sweep starts from the same model,
validates it on the same windows before training (its history row epoch -1, `zero_shot_val_loss`,
`zero_shot_monitored`) and forecasts the same test windows with it (`zero_shot_test`, and the quantiles
that the bootstrap interval and forecast.png pair with the selected model's). In a 12-job grid that was 12
identical evaluations. Here the first job that needs one computes it and publishes it in the sweep's
directory, `<hydra.sweep.dir>/.zero_shot/` (moirai_ft/sweep/once.py: atomic, locked, safe across
processes and nodes); the others read it. A single run (no -m) evaluates alone. A job's metrics.json is the one it would have written alone: the values are the
ones its own evaluation computes, replayed through the same code (moirai_ft/train/zero_shot.py).

Entries are keyed by everything that changes them: the starting weights (a hash of the tensors: checkpoint,
init and seed alike), the prepared data (a hash of the table and its split rows), the device kind and torch
version (numerics), and the job's resolved config minus the settings that only steer training
(TRAINING_ONLY). A key is built from what is left out, not from a list of what matters: a setting added
later counts until someone shows it does not. The pattern counts only as "plain or adapted": full, freeze_ffn
and head_only (what trains) validate the same module; an adapter (pattern=lora's) adds (zero) terms to it.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from moirai_ft.data.prepare import PreparedData
from moirai_ft.evaluation.forecast import eval_device
from moirai_ft.sweep.once import OnceStore

SHARED_DIR = ".zero_shot"  # in the sweep's directory (hidden: `ls multirun/*/*` lists its jobs only)
VALIDATION, TEST = "validation", "test"
# blend=true / calibrate=conformal: the zero-shot model's quantiles on the validation windows, at the test's
# eval.num_samples and eval.seed (moirai_ft/evaluation/planning.py)
VALIDATION_FORECAST = "validation_forecast"
RECORD, QUANTILES = "record.json", "quantiles.npy"
KEY_VERSION = 1  # bump when what an entry holds, or how it is computed, changes

# keys of the resolved config that steer training, the sweep or its reports, never the zero-shot model's
# evaluation (dotted: a key inside a group)
TRAINING_ONLY = (
    "lr", "weight_decay", "epochs", "steps_per_epoch", "warmup_steps", "gradient_clip", "oom_min_batch_size",
    "scheduler", "val_check_interval", "patience", "min_delta", "smoothing", "callbacks", "logger", "prune",
    "lr_find", "lr_finder", "resume", "sweep_root", "plan", "budget", "hydra", "pattern.train", "pattern.freeze",
    # validation runs eager (MoiraiFineTuner compiles the training loss only); how often the bar redraws
    "hardware.compile", "hardware.progress_bar_refresh", "hardware.log_every_n_steps",
    "eval.plot_windows",  # which windows forecast.png draws, from the shared quantiles
    # what the job does with the two models' forecasts (blend, calibration), never the zero-shot forecasts
    "calibrate", "blend", "blend_grid",
)


def data_fingerprint(data: PreparedData) -> str:
    """A hash of the table the job read and its split rows: the same config over an edited file differs."""
    h = hashlib.sha256()
    table = data.table
    h.update(np.ascontiguousarray(table.values).tobytes())
    h.update(np.asarray(table.index.asi8).tobytes())
    h.update(json.dumps([table.columns, table.freq, data.val_start, data.test_start]).encode())
    return h.hexdigest()[:16]


def device_kind(accelerator: str) -> str:
    """What the numbers depend on besides the config: the evaluation device's model and torch's version."""
    device = eval_device(accelerator)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return f"{name} torch {torch.__version__}"


def key_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without TRAINING_ONLY; the pattern reduced to what changes the module."""
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False, enum_to_str=True)
    assert isinstance(container, dict)
    for dotted in TRAINING_ONLY:
        *parents, leaf = dotted.split(".")
        node = container
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    pattern = container.get("pattern") or {}
    container["pattern"] = pattern if pattern.get("adapter") else "plain"
    return container


def entry_name(kind: str, cfg: DictConfig, weights: str, data: str, device: str) -> str:
    text = json.dumps({"version": KEY_VERSION, "kind": kind, "weights": weights, "data": data, "device": device,
                       "config": key_config(cfg)}, sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:20]}"


def _dumps(record: dict[str, Any]) -> bytes:
    return json.dumps(record, allow_nan=True).encode()  # NaN stays NaN (not null): the replay is exact


@dataclass
class SharedZeroShot:
    """One job's handle on its sweep's zero-shot entries. `weights` is the zero-shot model's fingerprint
    (metrics.json's zero_shot_fingerprint), `by` names the job in computed.log."""

    store: OnceStore
    weights: str
    data: str
    device: str
    by: str

    def name(self, kind: str, cfg: DictConfig) -> str:
        return entry_name(kind, cfg, self.weights, self.data, self.device)

    def validation(self, cfg: DictConfig):
        """claim() of the zero-shot validation entry: record.json {"val_loss", "monitored"}."""
        return self.store.claim(self.name(VALIDATION, cfg), self.by)

    def quantiles(self, kind: str, cfg: DictConfig, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The zero-shot model's quantiles of entry `kind` (VALIDATION_FORECAST) for the settings of `cfg`: read,
        or computed by `compute` and published."""
        with self.store.claim(self.name(kind, cfg), self.by) as claim:
            if claim.found is not None:
                return np.load(claim.found / QUANTILES)
            quantiles = compute()
            array = io.BytesIO()
            np.save(array, quantiles)
            claim.publish({QUANTILES: array.getvalue()})
            return quantiles

    def test(self, cfg: DictConfig, compute: Callable[[], tuple[np.ndarray, dict[str, float]]],
             ) -> tuple[np.ndarray, dict[str, float]]:
        """The zero-shot model's test quantiles and metrics for the evaluation settings of `cfg`: read, or
        computed by `compute` and published."""
        with self.store.claim(self.name(TEST, cfg), self.by) as claim:
            if claim.found is not None:
                record = json.loads((claim.found / RECORD).read_text())
                return np.load(claim.found / QUANTILES), {k: float(v) for k, v in record["metrics"].items()}
            quantiles, metrics = compute()
            array = io.BytesIO()
            np.save(array, quantiles)
            claim.publish({QUANTILES: array.getvalue(),
                           RECORD: _dumps({"metrics": {k: float(v) for k, v in metrics.items()}})})
            return quantiles, metrics


def validation_files(val_loss: float, monitored: float | None) -> dict[str, bytes]:
    return {RECORD: _dumps({"val_loss": val_loss, "monitored": monitored})}


def read_validation(entry: Path) -> tuple[float, float | None]:
    record = json.loads((Path(entry) / RECORD).read_text())
    monitored = record.get("monitored")
    return float(record["val_loss"]), (float(monitored) if monitored is not None else None)


def shared_zero_shot(root: Path, weights: str, data: PreparedData, accelerator: str, by: str) -> SharedZeroShot:
    return SharedZeroShot(OnceStore(Path(root) / SHARED_DIR), weights, data_fingerprint(data),
                          device_kind(accelerator), by)
