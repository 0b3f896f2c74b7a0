"""bench/device_check.sh, the one prepared GPU run, in its CPU dry run: every part runs at smoke scale and
leaves its status and figures in device_check.json, so the script cannot rot while no GPU is at hand."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import device_check  # noqa: E402

SUMMARY = re.compile(
    r"^summary: small@64 ratio=(\S+x|NA) base@32 ratio=(\S+x|NA) mfu=(\S+%|NA) base_full@32=(\S+GB|NA) "
    r"concurrent=(\S+|NA) job=(\d+/s|NA) job_mem=(\d+MiB|NA) pytest_gpu=(\d+p/\d+f/\d+s|NA) parts_ok=\d+/\d+"
)


@pytest.mark.slow  # about 95 s of CPU: seven processes, each training or evaluating a tiny model
def test_the_dry_run_exercises_every_part_and_writes_its_figures(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "device_check.sh"), "--dry-run", "--out", str(out)],
        cwd=tmp_path, env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=900,
    )
    result = json.loads((out / "device_check.json").read_text())
    parts = result["parts"]
    assert proc.returncode == 0, {k: (p["status"], p["error"]) for k, p in parts.items()}
    assert list(parts) == [p.name for p in device_check.PARTS]
    assert sorted(os.listdir(out)) == ["device_check.json", "device_check.log"]  # the device brings back 8 files
    assert result["mode"] == "dry-run" and result["environment"]["torch"] and result["environment"]["uni2ts"]
    assert parts["install"]["status"] == "skipped"  # nothing to install on the CPU
    assert parts["install"]["figures"]["listed"] == len(device_check.listed_wheels()) > 0
    assert all(p["status"] == "ok" for name, p in parts.items() if name != "install"), parts
    for p in parts.values():
        assert p["seconds"] is not None and p["cpu_s"] is not None and p["cap_s"] is not None

    f = parts["seed_small"]["figures"]  # both paths trained, and the ratio is theirs
    assert {r["path"] for r in f["runs"]} == {"uni2ts", "moirai-ft"}
    assert f["ratio"] == round(f["moirai_ft_samples_per_s"] / f["uni2ts_samples_per_s"], 2)
    # the dry run's base slot would repeat seed_small's command (tiny, smoke scale): it reuses its figures
    assert parts["seed_base"]["figures"] == {**f, "dry_run_same_as": "seed_small"}
    memory = parts["full_memory_base"]["figures"]
    assert memory["from"] == "seed_base" and memory["pattern"] == "full"
    assert memory["peak_reserved_gb"] is None  # no device memory on a CPU: nothing made up
    best = parts["best_base"]["figures"]
    assert 0 < best["mfu"] < 1 and best["best_batch_size"] in {r["batch_size"] for r in best["runs"]}
    job = parts["real_job"]["figures"]
    assert job["job_status"] == "completed" and job["samples_per_s"] > 0 and job["steps_run"] > 0
    concurrent = parts["concurrent"]["figures"]
    assert concurrent["statuses"] == {"2": ["completed", "completed"]}
    assert concurrent["aggregate_samples_per_s"]["2"] > 0
    tests = parts["pytest_gpu"]["figures"]
    assert tests["files"] and tests["skipped"] >= 1 and tests["failed"] == 0 and tests["passed"] == 0

    last = proc.stdout.strip().splitlines()[-1]
    assert last == result["summary"] and SUMMARY.match(last), last
    assert f"small@64 ratio={parts['seed_small']['figures']['ratio']}x" in last
    assert "base_full@32=NA" in last and "parts_ok=8/9" in last
    log = (out / "device_check.log").read_text()
    assert "compare_uni2ts.py" in log and "concurrent_jobs.py" in log and "train.py" in log


def test_a_part_past_its_cap_is_ended_and_the_run_goes_on_with_what_it_left(tmp_path):
    """The cap ends the part's whole process group (a child's own children too) and records it timed_out;
    the JSON is there for the parts after it."""
    args = argparse.Namespace(dry_run=True, out=tmp_path, budget=60.0)
    check = device_check.Check(args)
    pidfile = tmp_path / "grandchild.pid"

    def sleepy(c: device_check.Check):
        c.run(["bash", "-c", f"sleep 300 & echo $! > {pidfile}; wait"])
        return {"never": True}

    part = device_check.Part("environment", 2, 2, sleepy)  # a real part's slot
    # the later parts hold all but MIN_PART_S of the budget: this part's cap is the shortest one a part gets
    device_check.run_part(check, part, later_caps=check.left() - device_check.MIN_PART_S - 1)
    stored = json.loads((tmp_path / "device_check.json").read_text())["parts"]["environment"]
    assert stored["status"] == "timed_out" and "never" not in stored["figures"]
    assert not _running(int(pidfile.read_text()))  # the grandchild was ended with its parent
    assert "NA" in device_check.summary_line(check)


def test_the_plan_fits_one_device_call_and_benchmarks_md_writes_it_down():
    """The caps add up to 9 minutes, wheel install included, and BENCHMARKS.md's table gives each part's."""
    assert sum(p.cap_s for p in device_check.PARTS) == device_check.BUDGET_S["gpu"] <= 9 * 60
    text = (ROOT / "BENCHMARKS.md").read_text()
    for p in device_check.PARTS:
        assert re.search(rf"^\| `{p.name}` \| {p.cap_s} \|", text, re.M), p.name
    assert f"| total | {device_check.BUDGET_S['gpu']} |" in text


def _running(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    for _ in range(50):  # the kernel delivers the signal asynchronously
        if not status.exists() or "\tZ" in status.read_text().split("State:")[1].splitlines()[0]:
            return False
        time.sleep(0.1)
    return True


def test_the_compile_mode_of_the_later_parts_is_the_one_that_ran_on_small(tmp_path):
    check = device_check.Check(argparse.Namespace(dry_run=False, out=tmp_path, budget=None))
    eager = {"path": "moirai-ft", "compile": "off", "samples_per_s": 900.0, "error": None}
    theirs = {"path": "uni2ts", "compile": "off", "samples_per_s": 600.0, "error": None}

    def pick(runs, finished=True, start="reduce_overhead"):
        check.compile_mode = start
        device_check._pick_compile_mode(check, [theirs, eager, *runs], finished)
        return check.compile_mode

    assert pick([{**eager, "compile": "reduce_overhead", "samples_per_s": 9000.0}]) == "reduce_overhead"
    # CUDA graphs failed to capture: plain inductor next; and if that failed too, eager
    assert pick([{**eager, "compile": "reduce_overhead", "samples_per_s": None, "error": "RuntimeError"}]) == "default"
    assert pick([{**eager, "compile": "default", "samples_per_s": None, "error": "x"}], start="default") == "off"
    assert pick([], finished=False) == "off"  # cut off while compiling: the later parts run eager
