"""The side-by-side benchmark (bench/compare_uni2ts.py) in its CPU smoke mode, run as a user runs it, so
it cannot rot between GPU sessions: both paths train, and every figure the GPU run reports is there."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow  # both paths at several batch sizes, in one process
def test_benchmark_smoke_mode_runs_both_paths_and_writes_every_figure(tmp_path):
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare_uni2ts.py"), "--smoke", "--profile", "1", "--out", str(out)],
        cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for key in ("device", "python", "torch", "lightning", "uni2ts", "date", "command", "matmul_tflops"):
        assert result[key], key
    runs = result["runs"]
    assert all(r["error"] is None for r in runs), [r["error"] for r in runs]
    theirs = [r for r in runs if r["path"] == "uni2ts"]
    ours = [r for r in runs if r["path"] == "moirai-ft"]
    assert theirs and ours
    for r in runs:
        assert r["samples_per_s"] > 0 and 0 < r["mfu"] < 1 and r["aten_calls_per_step"] > 0
        assert r["extra"]["host_ops_per_step"] > 0 and "Name" in r["extra"]["top_ops"]  # --profile
    # the same model on both paths: one parameter count, one sample length
    assert len({(r["extra"]["params"], r["extra"]["tokens_per_sample"]) for r in runs}) == 1
    # uni2ts's step reads device values back; ours does not (tests/model/test_host_sync.py holds it at 0)
    assert min(r["host_syncs_per_step"] for r in theirs) > 0
    assert max(r["host_syncs_per_step"] for r in ours) == 0
    (summary,) = result["summary"]
    assert summary["ratio"] == round(summary["moirai_ft_samples_per_s"] / summary["uni2ts_samples_per_s"], 2)
    assert summary["best_batch_size"] in {r["batch_size"] for r in ours}
    assert summary["best_samples_per_s"] == max(r["samples_per_s"] for r in ours)
    assert "uni2ts" in proc.stdout and "moirai-ft" in proc.stdout  # the printed table
