"""Side by side, in one run: uni2ts's own fine-tuning path and moirai-ft's, on the same data and model.

uni2ts's path is what its fine-tuning recipe runs: MoiraiFinetune, SimpleFinetuneDatasetBuilder windows,
uni2ts's DataLoader with worker processes, Lightning fit. moirai-ft's path is `moirai_ft.train.job.run_job`
with the composed Hydra config, as `python train.py` runs it. Both start from the same randomly
initialised MoiraiModule (saved once, loaded by each) and read the same synthetic table (100 columns of
15-minute data over 11 months, mode S), so a sample is the same 19 tokens in both.

Measured for each: training samples/s over steady-state steps (after warm-up, compile and CUDA-graph
recording), model FLOPs utilisation (6 x parameters x tokens per sample against a measured bf16 matrix
product rate; fp32 in the CPU smoke run), peak GPU memory, and host synchronisations and aten calls per
step (counted on one further step). Settings: small at batch 64 and base at batch 32 (the user's),
then moirai-ft alone over larger batches for its best.

    python bench/compare_uni2ts.py --part seed --models small --out seed-small.json   # GPU, side by side
    python bench/compare_uni2ts.py --part best --out best.json      # GPU, moirai-ft's batch-size sweep
    python bench/compare_uni2ts.py --out bench.json                 # GPU, everything (over 10 minutes)
    python bench/compare_uni2ts.py --smoke --out smoke.json         # CPU, tiny model, seconds
    python bench/compare_uni2ts.py --part best --models base --batches 1024,4096 --sweep-steps 5,20  # shorter
bench/device_check.py runs it part by part, with fewer steps, inside one 9-minute GPU call.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from moirai_ft.config.store import register  # noqa: E402
from moirai_ft.instrument.host_sync import CountStepSyncs  # noqa: E402
from moirai_ft.train.job import run_job  # noqa: E402
from moirai_ft.model.load import random_module  # noqa: E402
from moirai_ft.data.synthetic import building_telemetry  # noqa: E402
from moirai_ft.data.windows import WindowSpec  # noqa: E402


@dataclass(frozen=True)
class Steps:
    warmup: int  # before timing: compile, CUDA-graph recording, allocator growth, worker start-up
    timed: int
    profiled: int = 0  # warm-up steps run under torch.profiler (--profile), one step before timing

    def with_profile(self, steps: int) -> "Steps":
        return replace(self, profiled=max(0, min(steps, self.warmup - 1)))

    @property
    def counted(self) -> int:
        """The step whose host syncs are counted, after the timed ones (counting slows a step down)."""
        return self.warmup + self.timed + 1

    @property
    def total(self) -> int:
        return self.counted + 2  # one more after the counted step: the last one runs the epoch-end checks


@dataclass(frozen=True)
class Scale:
    """Everything that differs between the GPU benchmark and the CPU smoke run."""

    models: tuple[str, ...]
    seed_batch: dict[str, int]  # the user's batch sizes: the side-by-side settings
    sweep_batch: dict[str, tuple[int, ...]]  # moirai-ft alone, for its best batch size
    data: dict[str, int]  # data.num_columns, data.num_days
    window: dict[str, int]  # context_length, prediction_length, patch_size
    variants: tuple[tuple[str, str], ...]  # moirai-ft's (precision, compile) at the seed settings
    uni2ts_precisions: tuple[str, ...]
    uni2ts_workers: int
    val_max_windows: int  # the job's validation checks, before and after the timed steps
    steps: Steps  # at the seed settings
    sweep_steps: Steps  # at the larger batches, whose steps are longer
    matmul_n: int  # size of the matrix product that measures the peak rate


GPU = Scale(
    models=("small", "base"),
    seed_batch={"small": 64, "base": 32},
    sweep_batch={"small": (512, 2048, 8192), "base": (256, 1024, 4096)},
    data={"num_columns": 100, "num_days": 330},
    window={"context_length": 512, "prediction_length": 96, "patch_size": 32},
    variants=(("32-true", "off"), ("bf16-mixed", "off"), ("bf16-mixed", "reduce_overhead")),
    uni2ts_precisions=("32-true", "bf16-mixed"),
    uni2ts_workers=11,
    val_max_windows=512,
    steps=Steps(warmup=20, timed=150),  # as ../shared/bench/anchor_uni2ts.py timed uni2ts's path
    sweep_steps=Steps(warmup=10, timed=40),
    matmul_n=8192,
)
SMOKE = Scale(  # --models small,base also runs here: host syncs and aten calls per step of the real sizes
    models=("tiny",),
    seed_batch={"tiny": 8, "small": 8, "base": 8},
    sweep_batch={"tiny": (16,), "small": (16,), "base": (16,)},
    data={"num_columns": 3, "num_days": 30},
    window={"context_length": 64, "prediction_length": 16, "patch_size": 16},
    variants=(("32-true", "off"),),
    uni2ts_precisions=("32-true",),
    uni2ts_workers=0,
    val_max_windows=16,
    steps=Steps(warmup=2, timed=2),
    sweep_steps=Steps(warmup=2, timed=2),
    matmul_n=1024,
)


@dataclass
class Run:
    path: str  # "uni2ts" or "moirai-ft"
    model: str
    batch_size: int
    precision: str
    compile: str = "off"
    samples_per_s: float | None = None
    mfu: float | None = None
    peak_allocated_gb: float | None = None
    peak_reserved_gb: float | None = None
    host_syncs_per_step: float | None = None
    aten_calls_per_step: float | None = None
    val_loss: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class ProfileSteps(L.Callback):
    """torch.profiler over `profiled` warm-up steps ending one step before the timed ones (its teardown
    stays out of the timing): device kernels per step, the ops taking the most device (on a CPU, host) time."""

    def __init__(self, steps: Steps):
        self.first, self.count = steps.warmup - 1 - steps.profiled, steps.profiled
        self.profiler: torch.profiler.profile | None = None
        self.summary: dict[str, Any] = {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if self.count and step == self.first and self.profiler is None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()
        elif self.profiler is not None and not self.summary and step == self.first + self.count:
            _sync()
            self.profiler.__exit__(None, None, None)
            try:
                self.summary = self._summarise()
            except Exception as e:  # noqa: BLE001 - a profiler API change must not cost the measurement
                self.summary = {"profile_error": f"{type(e).__name__}: {e}"}

    def _summarise(self) -> dict[str, Any]:
        events = self.profiler.events()
        on_device = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        by = "self_cuda_time_total" if on_device else "self_cpu_time_total"
        table = self.profiler.key_averages().table(sort_by=by, row_limit=12, max_name_column_width=60)
        return {
            "kernels_per_step": len(on_device) / self.count,
            "host_ops_per_step": sum(e.device_type == torch.autograd.DeviceType.CPU for e in events) / self.count,
            "top_ops": table,
        }


class StepTimer(L.Callback):
    """Wall time of `steps` training steps after `warmup`, with the device drained at both ends, and the
    peak device memory over those steps."""

    def __init__(self, steps: Steps):
        self.warmup, self.steps = steps.warmup, steps.timed
        self.t0: float | None = None
        self.elapsed: float | None = None
        self.peak_allocated = self.peak_reserved = 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.warmup and self.t0 is None:
            _sync()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.t0 is not None and self.elapsed is None and trainer.global_step == self.warmup + self.steps:
            _sync()
            self.elapsed = time.perf_counter() - self.t0
            if torch.cuda.is_available():
                self.peak_allocated = torch.cuda.max_memory_allocated()
                self.peak_reserved = torch.cuda.max_memory_reserved()

    def fill(self, run: Run, batch_size: int, flops_per_sample: float, peak_flops: float) -> None:
        if self.elapsed is None:
            run.error = run.error or "the run ended before the timed steps"
            return
        run.samples_per_s = round(self.steps * batch_size / self.elapsed, 1)
        run.mfu = round(run.samples_per_s * flops_per_sample / peak_flops, 4)
        if torch.cuda.is_available():
            run.peak_allocated_gb = round(self.peak_allocated / 2**30, 2)
            run.peak_reserved_gb = round(self.peak_reserved / 2**30, 2)


def matmul_dtype() -> torch.dtype:
    """The dtype of the device's peak matrix rate: bf16 on a GPU; fp32 on a CPU, where bf16 is emulated
    (slower than fp32, so an MFU against it would exceed 1)."""
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def peak_matmul_flops(n: int) -> float:
    """Measured matrix-product rate (FLOP/s) of this device: the denominator of MFU."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=matmul_dtype(), generator=g)  # random: zeros run faster
    b = torch.randn(n, n, device=device, dtype=matmul_dtype(), generator=g)
    for _ in range(3):
        a @ b
    _sync()
    reps = 10
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync()
    return 2 * n**3 * reps / (time.perf_counter() - t)


def compose_job(overrides: list[str]) -> DictConfig:
    register()  # the schemas conf/train.yaml composes against
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def job_overrides(scale: Scale, model: str, checkpoint: Path, batch_size: int, steps_per_epoch: int) -> list[str]:
    """The config both paths share, as `python train.py` overrides. The GPU hardware profile in both
    modes (on a CPU with accelerator=cpu), so the smoke run exercises the GPU's logging cadence."""
    return [
        f"model={model}",
        "model.init=pretrained",
        f"model.checkpoint={checkpoint}",
        "hardware=gpu",
        *([] if torch.cuda.is_available() else ["hardware.accelerator=cpu"]),
        "data=synthetic",
        *(f"data.{k}={v}" for k, v in scale.data.items()),
        *(f"{k}={v}" for k, v in scale.window.items()),
        f"batch_size={batch_size}",
        f"steps_per_epoch={steps_per_epoch}",
        "epochs=1",
        "warmup_steps=0",
        "lr=1e-5",
        f"val_max_windows={scale.val_max_windows}",
        # the benchmark times training: keep the job's closing test evaluation short
        "eval.max_windows=32",
        "eval.num_samples=8",
        "eval.plot_windows=0",
    ]


def save_random_model(cfg: DictConfig, directory: Path) -> tuple[Path, int]:
    """One random-init model per size, written once, loaded by both paths; returns (dir, parameters)."""
    torch.manual_seed(cfg.seed)
    module = random_module(cfg.model)
    path = directory / f"init-{cfg.model.name}"
    module.save_pretrained(path)
    return path, sum(p.numel() for p in module.parameters())


# --- uni2ts's own path ------------------------------------------------------------------------------


def build_uni2ts_dataset(cfg: DictConfig, directory: Path):
    """uni2ts's SimpleFinetuneDatasetBuilder over the same table, written as the CSV it reads."""
    from uni2ts.data.builder.simple import SimpleFinetuneDatasetBuilder

    frame = building_telemetry(cfg.data.num_columns, cfg.data.num_days, seed=cfg.seed)
    csv = directory / "synthetic.csv"
    frame.to_csv(csv)
    train_rows = int(len(frame) * cfg.data.train_ratio)  # the same split row as moirai-ft's ratio split
    builder = SimpleFinetuneDatasetBuilder(
        dataset="synthetic",
        windows=train_rows - cfg.context_length - cfg.prediction_length + 1,
        distance=1,
        prediction_length=cfg.prediction_length,
        context_length=cfg.context_length,
        patch_size=cfg.patch_size,
        mode="S",
        storage_path=directory / "uni2ts-data",
    )
    builder.build_dataset(file=csv, dataset_type="wide", offset=train_rows, freq="15min", normalize=True)
    return builder


def uni2ts_run(
    cfg: DictConfig, scale: Scale, builder: Any, checkpoint: Path, precision: str,
    flops_per_sample: float, peak_flops: float,
) -> Run:
    from uni2ts.data.loader import DataLoader
    from uni2ts.model.moirai import MoiraiFinetune, MoiraiModule

    run = Run("uni2ts", cfg.model.name, cfg.batch_size, precision)
    model = MoiraiFinetune(
        min_patches=2, min_mask_ratio=0.15, max_mask_ratio=0.5, max_dim=128,
        num_training_steps=10**6, num_warmup_steps=0, module=MoiraiModule.from_pretrained(str(checkpoint)),
        lr=cfg.lr, weight_decay=cfg.weight_decay, context_length=cfg.context_length,
        prediction_length=cfg.prediction_length, patch_size=cfg.patch_size, finetune_pattern="full",
    )
    model.seq_fields = model.seq_fields + ("sample_id",)  # as its fine-tuning recipe batches them
    workers = scale.uni2ts_workers
    loader = DataLoader(
        builder.load_dataset(model.train_transform_map), batch_size=cfg.batch_size, batch_size_factor=1.0,
        cycle=False, num_batches_per_epoch=None, shuffle=True, num_workers=workers, collate_fn=None,
        pin_memory=torch.cuda.is_available(), drop_last=True, fill_last=False,
        persistent_workers=workers > 0, prefetch_factor=2,
    )
    timer, profiler = StepTimer(scale.steps), ProfileSteps(scale.steps)
    counter = CountStepSyncs(first=scale.steps.counted, steps=1)
    trainer = L.Trainer(
        max_steps=scale.steps.total, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="auto", devices=1,
        precision=precision, gradient_clip_val=cfg.gradient_clip, limit_val_batches=0,
        callbacks=[profiler, timer, counter],
    )
    trainer.fit(model, loader)
    timer.fill(run, cfg.batch_size, flops_per_sample, peak_flops)
    record_counts(run, counter, profiler)
    return run


def record_counts(run: Run, counter: CountStepSyncs, profiler: ProfileSteps) -> None:
    run.extra.update(profiler.summary)
    if counter.done:
        run.host_syncs_per_step = counter.per_step
        run.aten_calls_per_step = counter.calls_per_step
        run.extra["host_sync_ops"] = dict(counter.counter.ops)
        if counter.cuda_syncs is not None:
            run.extra["cuda_sync_warnings_per_step"] = counter.cuda_syncs / counter.steps


# --- moirai-ft's path -------------------------------------------------------------------------------


def moirai_ft_run(
    overrides: list[str], steps: Steps, precision: str, compile_mode: str, directory: Path,
    flops_per_sample: float, peak_flops: float,
) -> Run:
    cfg = compose_job(overrides + [f"hardware.precision={precision}", f"hardware.compile={compile_mode}"])
    assert cfg.steps_per_epoch == steps.total, "the job must run exactly the steps timed and counted"
    run = Run("moirai-ft", cfg.model.name, cfg.batch_size, precision, compile_mode)
    timer, profiler = StepTimer(steps), ProfileSteps(steps)
    counter = CountStepSyncs(first=steps.counted, steps=1)
    job_dir = Path(tempfile.mkdtemp(dir=directory, prefix="job-"))
    metrics = run_job(cfg, job_dir, {"profile": profiler, "timer": timer, "syncs": counter})
    timer.fill(run, cfg.batch_size, flops_per_sample, peak_flops)
    record_counts(run, counter, profiler)
    run.val_loss = metrics.get("best_val_loss")
    run.extra["job_train_samples_per_s"] = metrics.get("train_samples_per_s")
    # the job retries an out-of-memory batch as smaller micro-batches: then it is not this batch's speed
    if metrics.get("oom_micro_batches"):
        run.error = f"out of memory at micro-batches {metrics['oom_micro_batches']}; ran with gradient " \
                    f"accumulation {metrics.get('accumulate_grad_batches')}"
    return run


def guarded(make_run: Any, fallback: Run) -> Run:
    """One setting's failure (out of memory, a compile error) is recorded, and the benchmark goes on."""
    started = time.perf_counter()
    try:
        run = make_run()
        run.extra = {**fallback.extra, **run.extra, "wall_s": round(time.perf_counter() - started, 1)}
    except Exception as e:  # noqa: BLE001 - recorded in the JSON and printed
        fallback.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
        run = fallback
    # the next run's peak memory must not include this one's leftovers
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return run


# --- the benchmark ----------------------------------------------------------------------------------


def environment(peak_flops: float) -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": version("lightning"),
        "numpy": version("numpy"),
        "uni2ts": version("uni2ts"),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "matmul_tflops": float(f"{peak_flops / 1e12:.4g}"),
        "matmul_dtype": str(matmul_dtype()).removeprefix("torch."),
    }


def summarise(runs: list[Run], scale: Scale) -> list[dict[str, Any]]:
    """Per model: uni2ts's best vs moirai-ft's best at the user's batch size, and moirai-ft's best batch."""

    def best(rs: list[Run]) -> Run | None:
        ok = [r for r in rs if r.samples_per_s and not r.error]
        return max(ok, key=lambda r: r.samples_per_s) if ok else None

    out = []
    for model in scale.models:
        seed = scale.seed_batch[model]
        at_seed = [r for r in runs if r.model == model and r.batch_size == seed]
        theirs = best([r for r in at_seed if r.path == "uni2ts"])
        ours = best([r for r in at_seed if r.path == "moirai-ft"])
        overall = best([r for r in runs if r.model == model and r.path == "moirai-ft"])
        full_at_seed = [r.peak_reserved_gb for r in at_seed if r.path == "moirai-ft" and r.peak_reserved_gb]
        out.append({
            "model": model,
            "seed_batch_size": seed,
            "uni2ts_samples_per_s": theirs.samples_per_s if theirs else None,
            "uni2ts_setting": f"{theirs.precision}" if theirs else None,
            "moirai_ft_samples_per_s": ours.samples_per_s if ours else None,
            "moirai_ft_setting": f"{ours.precision}, compile={ours.compile}" if ours else None,
            "ratio": round(ours.samples_per_s / theirs.samples_per_s, 2) if ours and theirs else None,
            "best_batch_size": overall.batch_size if overall else None,
            "best_samples_per_s": overall.samples_per_s if overall else None,
            "best_mfu": overall.mfu if overall else None,
            "best_setting": f"{overall.precision}, compile={overall.compile}" if overall else None,
            "peak_reserved_gb_at_seed_batch": max(full_at_seed) if full_at_seed else None,
        })
    return out


def print_table(runs: list[Run], summary: list[dict[str, Any]]) -> None:
    cols = ("path", "model", "batch_size", "precision", "compile", "samples_per_s", "mfu",
            "peak_reserved_gb", "host_syncs_per_step", "aten_calls_per_step", "error")
    print("\n" + " | ".join(cols))
    for r in runs:
        print(" | ".join(str(getattr(r, c)) for c in cols))
    print()
    for s in summary:
        print(json.dumps(s))


def _steps(text: str) -> Steps:
    warmup, timed = (int(x) for x in text.split(","))
    if warmup < 1 or timed < 1:
        raise argparse.ArgumentTypeError("WARMUP and TIMED must be at least 1")
    return Steps(warmup=warmup, timed=timed)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU smoke run: tiny model, a few steps, small data")
    parser.add_argument("--part", choices=("all", "seed", "best"), default="all",
                        help="seed: the side-by-side settings; best: moirai-ft's batch sweep")
    parser.add_argument("--models", default=None, help="comma-separated subset, e.g. small")
    parser.add_argument("--variants", default=None,
                        help="moirai-ft's precision:compile pairs at the seed settings, e.g. "
                             "bf16-mixed:default,bf16-mixed:reduce_overhead (compile: off, default, "
                             "reduce_overhead, max_autotune)")
    parser.add_argument("--sweep-compile", default=None,
                        help="hardware.compile for the batch sweep (default: the last variant's)")
    parser.add_argument("--steps", type=_steps, default=None, metavar="WARMUP,TIMED",
                        help="steps at the seed settings (default GPU 20,150; smoke 2,2)")
    parser.add_argument("--sweep-steps", type=_steps, default=None, metavar="WARMUP,TIMED",
                        help="steps at the swept batch sizes (default GPU 10,40; smoke 2,2)")
    parser.add_argument("--batches", default=None, metavar="B1,B2",
                        help="the batch sizes of the sweep (--part best) for every model run")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="run the last STEPS warm-up steps of each run under torch.profiler")
    parser.add_argument("--out", type=Path, default=None, help="the results as JSON, rewritten after every run")
    args = parser.parse_args(argv)

    scale = SMOKE if args.smoke else GPU
    if args.models:
        scale = replace(scale, models=tuple(args.models.split(",")))
    if args.steps:
        scale = replace(scale, steps=args.steps)
    if args.sweep_steps:
        scale = replace(scale, sweep_steps=args.sweep_steps)
    if args.batches:
        batches = tuple(int(b) for b in args.batches.split(","))
        scale = replace(scale, sweep_batch={m: batches for m in scale.models})
    if args.profile:
        scale = replace(scale, steps=scale.steps.with_profile(args.profile),
                        sweep_steps=scale.sweep_steps.with_profile(args.profile))
    if args.variants:
        scale = replace(scale, variants=tuple(tuple(v.split(":")) for v in args.variants.split(",")))
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --smoke on a CPU")
    peak_flops = peak_matmul_flops(scale.matmul_n)
    directory = Path(tempfile.mkdtemp(prefix="moirai-ft-bench-"))
    sweep_precision, sweep_compile = scale.variants[-1]
    sweep_compile = args.sweep_compile or sweep_compile
    runs: list[Run] = []
    uni2ts_data: Any = None  # one dataset for every model: the data and windows do not depend on it

    def record(run: Run) -> None:
        runs.append(run)
        print(json.dumps(asdict(run)), flush=True)
        if args.out:  # after every run: a run cut off at its time limit still leaves what it measured
            write_result(args.out, args, scale, peak_flops, runs)

    for model in scale.models:
        seed_batch = scale.seed_batch[model]
        shape = compose_job(job_overrides(scale, model, directory / "unused", seed_batch, 1))
        checkpoint, params = save_random_model(shape, directory)
        tokens = WindowSpec(shape.context_length, shape.prediction_length, shape.patch_size).tokens
        flops = 6 * params * tokens  # per sample: forward 2, backward 4 FLOPs per parameter and token
        same_model = {"params": params, "tokens_per_sample": tokens}
        if args.part in ("all", "seed"):
            overrides = job_overrides(scale, model, checkpoint, seed_batch, scale.steps.total)
            cfg = compose_job(overrides)
            if uni2ts_data is None:
                started = time.perf_counter()
                uni2ts_data = build_uni2ts_dataset(cfg, directory)
                print(f"uni2ts dataset built in {time.perf_counter() - started:.1f} s", flush=True)
            builder = uni2ts_data
            for precision in scale.uni2ts_precisions:
                record(guarded(
                    lambda: uni2ts_run(cfg, scale, builder, checkpoint, precision, flops, peak_flops),
                    Run("uni2ts", model, seed_batch, precision, extra=dict(same_model)),
                ))
            for precision, compile_mode in scale.variants:
                record(guarded(
                    lambda: moirai_ft_run(overrides, scale.steps, precision, compile_mode, directory, flops, peak_flops),
                    Run("moirai-ft", model, seed_batch, precision, compile_mode, extra=dict(same_model)),
                ))
        if args.part in ("all", "best"):
            for batch_size in scale.sweep_batch[model]:
                overrides = job_overrides(scale, model, checkpoint, batch_size, scale.sweep_steps.total)
                record(guarded(
                    lambda: moirai_ft_run(overrides, scale.sweep_steps, sweep_precision, sweep_compile, directory, flops, peak_flops),
                    Run("moirai-ft", model, batch_size, sweep_precision, sweep_compile, extra=dict(same_model)),
                ))
                if runs[-1].error and "out of memory" in runs[-1].error.lower():
                    break  # larger batches will not fit either
    result = write_result(args.out, args, scale, peak_flops, runs)
    print_table(runs, result["summary"])
    return result


def write_result(out: Path | None, args: argparse.Namespace, scale: Scale, peak_flops: float, runs: list[Run]) -> dict[str, Any]:
    result = {**environment(peak_flops), "smoke": args.smoke, "part": args.part, "scale": asdict(scale),
              "runs": [asdict(r) for r in runs], "summary": summarise(runs, scale)}
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2, default=str))
        tmp.replace(out)
    return result


if __name__ == "__main__":
    main()
