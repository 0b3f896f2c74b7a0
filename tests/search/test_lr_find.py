"""lr_find=true (moirai_ft/search/lr_find.py): Lightning's lr range test on the configured job."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from conftest import compose_cfg
from moirai_ft.train.job import run


def test_lr_find_writes_its_files_and_suggests_where_the_loss_falls(tmp_path: Path, capsys):
    # a random tiny model on an easy synthetic signal: the loss is flat at tiny lrs, falls in a band,
    # then blows up past it (the finder stops there)
    cfg = compose_cfg(["lr_find=true", "lr_finder.min_lr=1e-6", "lr_finder.max_lr=1", "lr_finder.num_steps=60",
                       "batch_size=64", "steps_per_epoch=null"])
    metrics = run(cfg, tmp_path)
    assert metrics["status"] == "lr_find", metrics.get("error")
    found = json.loads((tmp_path / "lr_find.json").read_text())
    assert (tmp_path / "lr_find.png").stat().st_size > 0
    lrs, losses, suggestion = np.array(found["lrs"]), np.array(found["losses"]), found["suggestion"]
    assert len(lrs) == len(losses) >= 20 and np.all(np.diff(lrs) > 0) and lrs[0] >= 1e-6
    assert metrics["lr_suggestion"] == suggestion and 1e-6 < suggestion < 1
    # the loss falls where the suggestion is: lower a decade above it than at it, and lower at it than
    # half a decade below it
    at = int(np.argmin(np.abs(np.log10(lrs) - math.log10(suggestion))))
    above = int(np.argmin(np.abs(np.log10(lrs) - math.log10(suggestion * 10))))
    below = int(np.argmin(np.abs(np.log10(lrs) - math.log10(suggestion / 3))))
    assert losses[above] < losses[at] < losses[below]
    assert found["sweep"] == metrics["lr_sweep"] and found["sweep"][0] < suggestion < found["sweep"][-1]
    out = capsys.readouterr().out
    assert "lr_find: suggestion" in out and "-m lr=" + ",".join(f"{v:g}" for v in found["sweep"]) in out
