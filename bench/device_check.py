"""Every speed claim of the project, measured in ONE prepared run of at most 9 minutes on the GPU machine.

    bash bench/device_check.sh --out $OUT            # on the GPU machine (BENCHMARKS.md gives the device call)
    bash bench/device_check.sh --dry-run --out DIR   # on a CPU: every part at smoke scale (tests/bench/test_device_check.py)

The parts, in order of what matters most if the run is cut short (PARTS below holds each one's time cap):
install the carried wheels (.whl/), print the GPU and versions, uni2ts against moirai-ft side by side
(bench/compare_uni2ts.py) for small at batch 64 and base at batch 32, base pattern=full's peak memory at 32
(read from the base side-by-side, whose moirai-ft runs are pattern=full), base at larger batches for MFU,
one real `python train.py model=small model.init=random hardware=gpu ...` job, 1/2/4 concurrent small jobs
(bench/concurrent_jobs.py), and `pytest -m gpu`.

Each part is a child process with a time cap; the caps add up to the total budget, and time a part leaves
unused goes to the next one. OUT/device_check.json and OUT/device_check.log are rewritten before and after
every part, so a run cut off at its limit still leaves what it measured. Only those two files go into OUT
(the device tool brings back at most 8 files); the parts' own files stay in a scratch directory.
The last line printed is the summary, e.g.
    summary: small@64 ratio=24.1x base@32 ratio=21.7x mfu=33.0% base_full@32=7.9GB ...
with NA for what did not run. This driver imports nothing beyond the standard library: the machine's
Python packages are only usable after its first part has installed the wheels.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from concurrent_jobs import GpuSampler  # noqa: E402  (standard library only, like this driver)

BUDGET_S = {"gpu": 540, "dry": 600}  # the GPU run's 9 minutes; the dry run's caps are only a safety net
MIN_PART_S = 10  # a part with less time left than this is skipped, not started
SITE = "/tmp/site"  # where the carried wheels are installed on the GPU machine (the device tool's README)

# the side-by-side on the GPU: 10 warm-up steps (compile and CUDA-graph recording happen there), 50 timed,
# the last 2 warm-up steps profiled (top ops for the notes when a goal is missed)
SEED_STEPS, PROFILE_STEPS = "10,50", "2"
BEST_BATCHES, BEST_STEPS = "1024,4096", "5,20"
# the real job and the concurrent jobs: small on a 20-column table, as bench/concurrent_jobs.py's defaults
JOB_STEPS, CONCURRENT_STEPS, CONCURRENT_JOBS = 300, 200, "1,2,4"
# tests/conftest.py's TINY job: what the real job runs in the dry run
DRY_JOB = ["model=tiny", "data.num_columns=3", "data.num_days=30", "context_length=64", "prediction_length=16",
           "patch_size=16", "batch_size=16", "steps_per_epoch=6", "lr=1e-3", "val_max_windows=64",
           "eval.max_windows=32", "eval.num_samples=10"]


@dataclass
class PartResult:
    status: str = "pending"  # pending | running | ok | failed | timed_out | skipped
    cap_s: float | None = None
    seconds: float | None = None
    cpu_s: float | None = None  # user + system time of the part's processes: its cost on a loaded machine
    command: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class PartFailed(Exception):
    """The part ran but did not give its figures; the message says why."""


class TimedOut(Exception):
    pass


class Check:
    """The run: its mode, directories, the child processes' environment, and the results so far."""

    def __init__(self, args: argparse.Namespace):
        self.dry = args.dry_run
        self.out: Path = args.out.resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="device_check_"))
        self.log_path = self.out / "device_check.log"
        self.log_path.write_text("")
        self.python = sys.executable
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        if self.dry:  # the 2-core CPU: tiny models gain nothing from intra-op threads, and jobs run side by side
            self.env["OMP_NUM_THREADS"] = "1"
        self.started = time.monotonic()
        self.budget = args.budget or BUDGET_S["dry" if self.dry else "gpu"]
        self.compile_mode = "reduce_overhead"  # the seed runs' candidate; then the mode that won on small
        self.parts: dict[str, PartResult] = {p.name: PartResult() for p in PARTS}
        self.environment: dict[str, Any] = {}
        self.child: subprocess.Popen | None = None
        self.part_deadline = self.started + self.budget

    # --- output -----------------------------------------------------------------------------------------

    def say(self, line: str) -> None:
        stamped = f"[device_check {time.monotonic() - self.started:6.1f}s] {line}"
        print(stamped, flush=True)
        with self.log_path.open("a") as log:
            log.write(stamped + "\n")

    def write(self) -> dict[str, Any]:
        result = {
            "mode": "dry-run" if self.dry else "gpu",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["bench/device_check.sh", *sys.argv[1:]]),
            "budget_s": self.budget,
            "elapsed_s": round(time.monotonic() - self.started, 1),
            "environment": self.environment,
            "parts": {name: asdict(p) for name, p in self.parts.items()},
            "summary": summary_line(self),
        }
        tmp = self.out / "device_check.json.tmp"
        tmp.write_text(json.dumps(result, indent=2, default=str))
        tmp.replace(self.out / "device_check.json")
        return result

    # --- child processes --------------------------------------------------------------------------------

    def run(self, cmd: list[str], cwd: Path | None = None, timeout: float | None = None) -> int:
        """Run cmd with its output appended to the log; past the part's cap, its whole process group is
        ended (data-loader workers, concurrent jobs) and TimedOut raised."""
        self.say("$ " + " ".join(cmd))
        with self.log_path.open("a") as log:
            self.child = subprocess.Popen(cmd, cwd=cwd or self.work, env=self.env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
            try:
                return self.child.wait(timeout=timeout if timeout is not None else self.cap_left())
            except subprocess.TimeoutExpired:
                self.end_child()
                raise TimedOut from None
            finally:
                self.child = None

    def end_child(self) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(child.pid, sig)  # the group this driver started for the child (start_new_session)
            except ProcessLookupError:
                return
            try:
                child.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def cap_left(self) -> float:
        return max(1.0, self.part_deadline - time.monotonic())

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.started)


# --- the parts --------------------------------------------------------------------------------------------


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def listed_wheels() -> list[str]:
    """The packages bench/gpu_wheels.txt says the GPU machine lacks (bench/fetch_wheels.sh fetches them)."""
    lines = (line.split("#")[0].strip() for line in (ROOT / "bench" / "gpu_wheels.txt").read_text().splitlines())
    return [_norm(re.split(r"[=<>!~ ;\[]", line)[0]) for line in lines if line]


def part_install(c: Check) -> dict[str, Any]:
    wheels = sorted((ROOT / ".whl").glob("*.whl"))
    have = {_norm(w.name.split("-")[0]) for w in wheels}
    missing = [name for name in listed_wheels() if name not in have]
    figures = {"wheels": len(wheels), "listed": len(listed_wheels()), "missing": missing, "target": None}
    if c.dry:
        raise Skipped("dry run: this machine's environment already has the packages", figures)
    if not wheels:
        raise PartFailed("no wheels in .whl/: run `bash bench/fetch_wheels.sh` here and carry .whl", figures)
    if missing:  # go on: the machine may have them after all; the environment part says for sure
        c.say(f"install: bench/gpu_wheels.txt lists packages with no wheel in .whl/: {', '.join(missing)}")
    rc = c.run([c.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                "--no-cache-dir", "--upgrade", "--target", SITE, *map(str, wheels)])
    if rc != 0:
        raise PartFailed(f"pip install exited {rc} (see the log)")
    c.env["PYTHONPATH"] = os.pathsep.join([SITE, c.env["PYTHONPATH"]])  # the carried versions win
    return {**figures, "target": SITE}


def part_environment(c: Check) -> dict[str, Any]:
    if shutil.which("nvidia-smi"):
        c.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit",
               "--format=csv"])
    path = c.work / "environment.json"
    rc = c.run([c.python, str(Path(__file__)), "--print-env", str(path)])
    if rc != 0 or not path.exists():
        raise PartFailed(f"the environment probe exited {rc}: a package is missing (see the log)")
    c.environment = json.loads(path.read_text())
    c.say("environment: " + json.dumps(c.environment))
    return dict(c.environment)


def print_env(path: Path) -> None:
    """Run in a child, after the install: the versions the measurement ran on."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    def v(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    cuda = torch.cuda.is_available()
    info = {
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({platform.machine()}, {os.cpu_count()} cores)",
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        "cuda": torch.version.cuda if cuda else None,
        "driver": _driver() if cuda else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    for name in ("lightning", "numpy", "pandas", "uni2ts", "gluonts", "hydra-core", "omegaconf", "datasets",
                 "optuna", "peft", "transformers", "triton"):
        info[name] = v(name)
    import uni2ts.model.moirai  # noqa: F401  (fails here, not in the measurements, if a carried wheel is missing)
    import moirai_ft.train.job  # noqa: F401

    path.write_text(json.dumps(info))


def _driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def _compare(c: Check, name: str, args: list[str]) -> dict[str, Any]:
    """bench/compare_uni2ts.py in a child; its JSON (rewritten after every run) read even when cut off."""
    out = c.work / f"{name}.json"
    cmd = [c.python, str(ROOT / "bench" / "compare_uni2ts.py"), *(["--smoke"] if c.dry else []), *args,
           "--out", str(out)]
    try:
        rc = c.run(cmd)
    except TimedOut:
        rc = None
    result = json.loads(out.read_text()) if out.exists() else {}
    if rc is None:
        raise TimedOut(result)
    if rc != 0 and not result.get("runs"):
        raise PartFailed(f"compare_uni2ts.py exited {rc} before any run (see the log)")
    return result


def _compact(run: dict[str, Any]) -> dict[str, Any]:
    keep = ("path", "model", "batch_size", "precision", "compile", "samples_per_s", "mfu", "peak_allocated_gb",
            "peak_reserved_gb", "host_syncs_per_step", "aten_calls_per_step", "val_loss", "error")
    extra = run.get("extra", {})
    return {**{k: run.get(k) for k in keep},
            **{k: extra.get(k) for k in ("kernels_per_step", "cuda_sync_warnings_per_step", "wall_s", "top_ops")
               if k in extra}}


def _side_by_side(c: Check, name: str, model: str) -> dict[str, Any]:
    if c.dry:
        args = ["--part", "seed", "--models", "tiny"]
    else:
        variants = "bf16-mixed:off" + (f",bf16-mixed:{c.compile_mode}" if c.compile_mode != "off" else "")
        args = ["--part", "seed", "--models", model, "--steps", SEED_STEPS, "--variants", variants,
                "--profile", PROFILE_STEPS]
    try:
        result = _compare(c, name, args)
    except TimedOut as t:
        result = t.args[0] if t.args else {}
        c.parts[name].figures = _seed_figures(result)
        raise
    figures = _seed_figures(result)
    if figures.get("ratio") is None:
        errors = [r["error"] for r in figures.get("runs", []) if r.get("error")]
        raise PartFailed("no ratio: " + ("; ".join(errors) if errors else "a path gave no samples/s"), figures)
    return figures


def _seed_figures(result: dict[str, Any]) -> dict[str, Any]:
    summary = (result.get("summary") or [{}])[0]
    keys = ("model", "seed_batch_size", "uni2ts_samples_per_s", "uni2ts_setting", "moirai_ft_samples_per_s",
            "moirai_ft_setting", "ratio", "peak_reserved_gb_at_seed_batch")
    return {**{k: summary.get(k) for k in keys}, "matmul_tflops": result.get("matmul_tflops"),
            "runs": [_compact(r) for r in result.get("runs", [])]}


def part_seed_small(c: Check) -> dict[str, Any]:
    """Also picks the compile mode of every later part: the one that ran on small; plain inductor
    (`default`) if reduce_overhead failed; eager (`off`) if the compiled run did not finish in time."""
    try:
        figures = _side_by_side(c, "seed_small", "small")
    except TimedOut:
        _pick_compile_mode(c, c.parts["seed_small"].figures.get("runs", []), finished=False)
        raise
    except PartFailed as e:
        _pick_compile_mode(c, e.args[1].get("runs", []) if len(e.args) > 1 else [], finished=True)
        raise
    _pick_compile_mode(c, figures["runs"], finished=True)
    figures["compile_mode_next"] = c.compile_mode
    return figures


def _pick_compile_mode(c: Check, runs: list[dict[str, Any]], finished: bool) -> None:
    if c.dry:
        return  # the dry run compiles nothing: inductor's C++ build alone would take minutes on 2 cores
    tried = [r for r in runs if r["path"] == "moirai-ft" and r["compile"] != "off"]
    ok = [r for r in tried if r["samples_per_s"] and not r["error"]]
    if ok:
        c.compile_mode = max(ok, key=lambda r: r["samples_per_s"])["compile"]
    elif tried:
        c.compile_mode = "default" if c.compile_mode == "reduce_overhead" else "off"
    elif not finished:
        c.compile_mode = "off"


def part_seed_base(c: Check) -> dict[str, Any]:
    small = c.parts["seed_small"]
    if c.dry and small.status == "ok":
        # the dry run's base slot is seed_small's command exactly (the tiny model at smoke scale): its figures
        # stand for both, and the part after this one still reads them from here
        return {**small.figures, "dry_run_same_as": "seed_small"}
    return _side_by_side(c, "seed_base", "base")


def part_full_memory_base(c: Check) -> dict[str, Any]:
    """No run of its own: base's side-by-side runs moirai-ft with pattern=full (the default) at batch 32."""
    seed = c.parts["seed_base"]
    ours = [r for r in seed.figures.get("runs", []) if r["path"] == "moirai-ft" and not r["error"]
            and r["samples_per_s"]]
    if not ours:
        raise Skipped("the base side-by-side gave no moirai-ft run", {"peak_reserved_gb": None})
    by_setting = {f"{r['precision']}, compile={r['compile']}": r["peak_reserved_gb"] for r in ours}
    peaks = [g for g in by_setting.values() if g is not None]
    return {"from": "seed_base", "pattern": "full", "model": ours[0]["model"], "batch_size": ours[0]["batch_size"],
            "peak_reserved_gb": max(peaks) if peaks else None,  # None on a CPU: no device memory to read
            "peak_allocated_gb": max((r["peak_allocated_gb"] or 0 for r in ours), default=None) if peaks else None,
            "peak_reserved_gb_by_setting": by_setting, "goal_gb": 12.0,
            "note": "add about 0.5 GB of CUDA context to compare with the goal"}


def part_best_base(c: Check) -> dict[str, Any]:
    if c.dry:
        args = ["--part", "best", "--models", "tiny"]
    else:
        args = ["--part", "best", "--models", "base", "--batches", BEST_BATCHES, "--sweep-steps", BEST_STEPS,
                "--variants", f"bf16-mixed:{c.compile_mode}"]
    try:
        result = _compare(c, "best_base", args)
    except TimedOut as t:
        c.parts["best_base"].figures = _best_figures(t.args[0] if t.args else {})
        raise
    figures = _best_figures(result)
    if figures["mfu"] is None:
        raise PartFailed("no batch size gave a measurement", figures)
    return figures


def _best_figures(result: dict[str, Any]) -> dict[str, Any]:
    summary = (result.get("summary") or [{}])[0]
    mfu = summary.get("best_mfu")
    return {"model": summary.get("model"), "best_batch_size": summary.get("best_batch_size"),
            "best_samples_per_s": summary.get("best_samples_per_s"), "mfu": mfu,
            "mfu_pct": round(100 * mfu, 1) if mfu is not None else None, "setting": summary.get("best_setting"),
            "matmul_tflops": result.get("matmul_tflops"), "matmul_dtype": result.get("matmul_dtype"),
            "runs": [_compact(r) for r in result.get("runs", [])]}


def part_real_job(c: Check) -> dict[str, Any]:
    job_dir = c.work / "real_job"
    if c.dry:
        args = [*DRY_JOB, "hardware=gpu", "hardware.accelerator=cpu", "hardware.precision=32-true"]
    else:
        args = ["model=small", "model.init=random", "hardware=gpu", f"hardware.compile={c.compile_mode}",
                "data.num_columns=20", "data.num_days=60", f"steps_per_epoch={JOB_STEPS}", "val_max_windows=512",
                "eval.max_windows=256", "eval.num_samples=20"]
    cmd = [c.python, str(ROOT / "train.py"), *args, "epochs=1", "warmup_steps=0", "eval.plot_windows=0",
           "resume=false", f"hydra.run.dir={job_dir}"]
    sampler = GpuSampler()  # nvidia-smi every second: the job process's memory, its CUDA context included
    sampler.start()
    try:
        rc = c.run(cmd)
    finally:
        sampler.stop()
    metrics_path = job_dir / "metrics.json"
    if not metrics_path.exists():
        raise PartFailed(f"train.py exited {rc} without metrics.json (see the log)")
    m = json.loads(metrics_path.read_text())
    figures = {"args": args, "job_status": m.get("status"), "samples_per_s": m.get("train_samples_per_s"),
               "steps_run": m.get("steps_run"), "batch_size": m.get("batch_size"), "wall_s": m.get("wall_s"),
               "best_val_loss": m.get("best_val_loss"),
               "peak_gpu_mem_mib": max(sampler.mem_by_pid.values()) if sampler.mem_by_pid else None,
               "gpu_mem_peak_total_mib": sampler.total_mib if sampler.available else None}
    if rc != 0 or m.get("status") != "completed":
        raise PartFailed(f"train.py exited {rc}, job status {m.get('status')}: {m.get('error')}", figures)
    return figures


def part_concurrent(c: Check) -> dict[str, Any]:
    out = c.work / "concurrent"
    # the dry run: 2 tiny jobs at once (one sweep, 3 processes) exercise the same code as 1, 2 and 4
    args = ["--smoke", "--jobs", "2"] if c.dry else ["--jobs", CONCURRENT_JOBS, "--model", "small",
                                                       "--steps", str(CONCURRENT_STEPS)]
    timed_out = False
    try:
        rc = c.run([c.python, str(ROOT / "bench" / "concurrent_jobs.py"), *args, "--out", str(out)])
    except TimedOut:
        rc, timed_out = None, True
    report_path = out / "concurrent_jobs.json"
    results = json.loads(report_path.read_text())["results"] if report_path.exists() else []
    figures = {
        "jobs": [r["jobs"] for r in results],
        "aggregate_samples_per_s": {str(r["jobs"]): r["aggregate_samples_per_s"] for r in results},
        "per_job_samples_per_s": {str(r["jobs"]): r["per_job_samples_per_s"] for r in results},
        "gpu_mem_mib_per_job": {str(r["jobs"]): r["gpu_mem_mib_per_job"] for r in results},
        "gpu_mem_peak_total_mib": {str(r["jobs"]): r["gpu_mem_peak_total_mib"] for r in results},
        "gpu_util_mean_pct": {str(r["jobs"]): r["gpu_util_mean_pct"] for r in results},
        "statuses": {str(r["jobs"]): r["statuses"] for r in results},
    }
    if timed_out:
        c.parts["concurrent"].figures = figures
        raise TimedOut
    if rc != 0 or not results:
        raise PartFailed(f"concurrent_jobs.py exited {rc}: a job did not complete (see the log)", figures)
    return figures


def part_pytest_gpu(c: Check) -> dict[str, Any]:
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                   if "mark.gpu" in p.read_text())  # collecting only these keeps the part short
    if not files:
        raise Skipped("no test is marked gpu", {"files": []})
    rc = c.run([c.python, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *files], cwd=ROOT)
    tail = c.log_path.read_text()[-3000:]
    counts = {k: 0 for k in ("passed", "failed", "skipped", "errors")}
    last = [line for line in tail.splitlines() if re.search(r"\d+ (passed|failed|skipped|errors?)\b", line)]
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?)\b", last[-1] if last else ""):
        counts["errors" if what.startswith("error") else what] = int(n)
    figures = {"files": files, "exit_code": rc, **counts}
    if rc != 0:
        raise PartFailed(f"pytest -m gpu exited {rc}", figures)
    return figures


class Skipped(Exception):
    def __init__(self, reason: str, figures: dict[str, Any] | None = None):
        super().__init__(reason)
        self.figures = figures or {}


@dataclass(frozen=True)
class Part:
    name: str
    cap_s: int  # on the GPU; the sum is BUDGET_S["gpu"] (BENCHMARKS.md writes the plan down)
    dry_cap_s: int
    run: Callable[[Check], dict[str, Any]]


PARTS = (
    Part("install", 30, 10, part_install),
    Part("environment", 15, 60, part_environment),
    Part("seed_small", 120, 100, part_seed_small),
    Part("seed_base", 130, 100, part_seed_base),
    Part("full_memory_base", 0, 0, part_full_memory_base),
    Part("best_base", 75, 80, part_best_base),
    Part("real_job", 50, 80, part_real_job),
    Part("concurrent", 80, 110, part_concurrent),
    Part("pytest_gpu", 40, 60, part_pytest_gpu),
)
assert sum(p.cap_s for p in PARTS) == BUDGET_S["gpu"] and sum(p.dry_cap_s for p in PARTS) == BUDGET_S["dry"]


# --- the run ---------------------------------------------------------------------------------------------


def run_part(c: Check, part: Part, later_caps: float) -> None:
    result = c.parts[part.name]
    own = part.dry_cap_s if c.dry else part.cap_s
    # the part's own cap plus whatever earlier parts left unused, never eating into the later parts' caps
    # unless the run is already behind; never past the total budget
    cap = min(c.left(), max(own, c.left() - later_caps))
    if own and cap < MIN_PART_S:
        result.status, result.error = "skipped", f"out of time: {c.left():.0f} s of the budget left"
        c.say(f"{part.name}: skipped ({result.error})")
        return
    c.part_deadline = time.monotonic() + cap
    result.status, result.cap_s = "running", round(cap, 1)
    c.write()
    c.say(f"{part.name}: start (cap {cap:.0f} s)")
    t0, cpu0 = time.monotonic(), _children_cpu()
    try:
        result.figures = part.run(c)
        result.status = "ok"
    except Skipped as s:
        result.status, result.error, result.figures = "skipped", str(s), s.figures
    except TimedOut:
        result.status, result.error = "timed_out", f"cut off at its cap of {cap:.0f} s; figures are what it finished"
    except PartFailed as e:
        result.status, result.error = "failed", str(e.args[0])
        if len(e.args) > 1:
            result.figures = e.args[1]
    except Exception as e:  # noqa: BLE001 - one part's breakage must not cost the others their measurement
        result.status, result.error = "failed", f"{type(e).__name__}: {e}"
    result.seconds = round(time.monotonic() - t0, 1)
    result.cpu_s = round(_children_cpu() - cpu0, 1)
    c.say(f"{part.name}: {result.status} in {result.seconds} s" + (f" ({result.error})" if result.error else ""))
    c.write()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # every descendant waited for, grandchildren too
    return usage.ru_utime + usage.ru_stime


def summary_line(c: Check) -> str:
    p = c.parts

    def fig(part: str, key: str, fmt: str = "{}") -> str:
        value = p[part].figures.get(key)
        return fmt.format(value) if value is not None else "NA"

    conc = p["concurrent"].figures.get("aggregate_samples_per_s") or {}
    tests = p["pytest_gpu"].figures
    fields = [
        f"small@64 ratio={fig('seed_small', 'ratio', '{}x')}",
        f"base@32 ratio={fig('seed_base', 'ratio', '{}x')}",
        f"mfu={fig('best_base', 'mfu_pct', '{}%')}",
        f"base_full@32={fig('full_memory_base', 'peak_reserved_gb', '{}GB')}",
        "concurrent=" + (",".join(f"{n}:{v}/s" for n, v in conc.items()) or "NA"),
        f"job={fig('real_job', 'samples_per_s', '{:.0f}/s')}",
        f"job_mem={fig('real_job', 'peak_gpu_mem_mib', '{}MiB')}",
        "pytest_gpu=" + (f"{tests['passed']}p/{tests['failed']}f/{tests['skipped']}s" if "passed" in tests else "NA"),
        f"parts_ok={sum(r.status == 'ok' for r in p.values())}/{len(p)}",
    ]
    if c.dry:
        fields.append("dry_run=tiny")  # the small and base slots ran the tiny model at smoke scale
    return "summary: " + " ".join(fields)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="on a CPU: every part at smoke scale, ~1.5 min")
    parser.add_argument("--out", type=Path, default=None, help="where device_check.json and device_check.log go")
    parser.add_argument("--budget", type=float, default=None, help="total seconds (default GPU 540, dry run 300)")
    parser.add_argument("--parts", default=None, help="comma-separated subset of: " + ",".join(p.name for p in PARTS))
    parser.add_argument("--print-env", type=Path, default=None, help=argparse.SUPPRESS)  # the environment child
    args = parser.parse_args(argv)
    if args.print_env:
        print_env(args.print_env)
        return 0
    if args.out is None:
        parser.error("--out DIR is required")
    chosen = [p for p in PARTS if not args.parts or p.name in args.parts.split(",")]
    c = Check(args)

    def stop(signum: int, frame: Any) -> None:  # the caller's time limit: end the child, keep what was measured
        c.end_child()
        for r in c.parts.values():
            if r.status == "running":
                r.status, r.error = "timed_out", f"the whole run was stopped (signal {signum})"
        c.write()
        print(summary_line(c), flush=True)
        sys.exit(124)

    signal.signal(signal.SIGTERM, stop)
    c.say(f"mode {'dry-run' if c.dry else 'gpu'}, budget {c.budget:.0f} s, out {c.out}, scratch {c.work}")
    for i, part in enumerate(chosen):
        later = sum((p.dry_cap_s if c.dry else p.cap_s) for p in chosen[i + 1:])
        run_part(c, part, later)
    for name, r in c.parts.items():
        if r.status == "pending":
            r.status, r.error = "skipped", "not chosen (--parts)"
    result = c.write()
    c.say(f"done in {result['elapsed_s']} s; results: {c.out / 'device_check.json'}")
    print(result["summary"], flush=True)
    return 0 if all(r.status in ("ok", "skipped") for r in c.parts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
