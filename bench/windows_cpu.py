"""How long one training batch of windows takes to build on one CPU core.

The issue's figure: 2,048 mode-S windows (context 512, patch 32, prediction 96) drawn at random from
100 columns x 32,000 rows, under 100 ms. Run: `.venv/bin/python bench/windows_cpu.py` (prints the median).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not
from moirai_ft.data.windows import Windows, WindowSpec, forecast_starts  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--columns", type=int, default=100)
    p.add_argument("--rows", type=int, default=32_000)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--prediction", type=int, default=96)
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--mode", choices=["S", "M"], default="S")
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args()

    torch.set_num_threads(1)  # the figure is for one core
    g = torch.Generator().manual_seed(0)
    series = torch.randn(args.columns, args.rows, generator=g)
    series[series > 2.5] = float("nan")  # about 0.6% missing, as sensor dropouts leave
    spec = WindowSpec(args.context, args.prediction, args.patch, max_patch_size=128)
    starts = forecast_starts(args.context, args.rows - args.prediction, 1)
    windows = Windows(series, starts, spec, args.mode)

    times_ms: list[float] = []
    for _ in range(args.repeats + 3):  # the first few warm the allocator
        idx = torch.randint(len(windows), (args.batch,), generator=g)
        t0 = time.perf_counter()
        batch = windows.batch(idx)
        times_ms.append((time.perf_counter() - t0) * 1e3)
    times_ms = times_ms[3:]
    shape = tuple(batch["target"].shape)
    print(
        f"mode {args.mode}: {args.batch} windows (context {args.context}, prediction {args.prediction}, "
        f"patch {args.patch}) from {args.columns} columns x {args.rows} rows, target {shape}, 1 thread: "
        f"median {statistics.median(times_ms):.1f} ms, min {min(times_ms):.1f} ms over {args.repeats} batches"
    )


if __name__ == "__main__":
    main()
