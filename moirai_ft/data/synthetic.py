"""The embedded dataset: building-like HVAC telemetry at 15-minute steps, deterministic from a seed.

Each column mixes what real building sensors show: a daily cycle, an occupancy schedule (weekdays
7:00-19:00, quiet weekends), a slow weather-driven component shared across the building, sensor
noise, and a few gaps (runs of NaN, as sensor dropouts leave in exports).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

STEPS_PER_DAY = 96  # 15-minute steps


def building_telemetry(num_columns: int, num_days: int, seed: int = 0, start: str = "2024-01-01") -> pd.DataFrame:
    """A wide frame: DatetimeIndex at 15 minutes, one float column per sensor, NaN in the gaps."""
    rng = np.random.default_rng(seed)
    n = num_days * STEPS_PER_DAY
    t = np.arange(n)
    hour = (t % STEPS_PER_DAY) / 4.0
    weekday = (t // STEPS_PER_DAY) % 7 < 5

    # occupancy: smooth ramps at 7:00 and 19:00 on weekdays, a trickle at weekends
    ramp = 1 / (1 + np.exp(-(hour - 7.0) * 2)) - 1 / (1 + np.exp(-(hour - 19.0) * 2))
    occupancy = np.where(weekday, ramp, 0.1 * ramp)

    # weather: an annual swing plus a smoothed random walk (fronts passing over a few days)
    walk = np.cumsum(rng.standard_normal(n)) * 0.02
    kernel = np.ones(STEPS_PER_DAY) / STEPS_PER_DAY
    walk = np.convolve(walk - walk.mean(), kernel, mode="same")
    outdoor = np.sin(2 * np.pi * t / (365 * STEPS_PER_DAY)) + 0.5 * walk + 0.3 * np.sin(2 * np.pi * (hour - 15) / 24)

    daily_phase = rng.uniform(0, 2 * np.pi, num_columns)
    w_daily = rng.uniform(0.1, 1.0, num_columns)
    w_occ = rng.uniform(0.0, 2.0, num_columns)
    w_weather = rng.uniform(-1.5, 1.5, num_columns)
    noise = rng.uniform(0.05, 0.3, num_columns)
    level = rng.uniform(-5, 50, num_columns)
    scale = rng.uniform(0.5, 20, num_columns)

    daily = np.sin(2 * np.pi * t[:, None] / STEPS_PER_DAY + daily_phase)
    values = (
        w_daily * daily
        + w_occ * occupancy[:, None]
        + w_weather * outdoor[:, None]
        + noise * rng.standard_normal((n, num_columns))
    )
    values = (level + scale * values).astype(np.float32)

    # sensor dropouts: about one column in three loses a few runs of 1 hour to 1 day
    for c in np.flatnonzero(rng.random(num_columns) < 0.35):
        for _ in range(rng.integers(1, 4)):
            length = int(rng.integers(4, STEPS_PER_DAY + 1))
            start_i = int(rng.integers(0, max(1, n - length)))
            values[start_i : start_i + length, c] = np.nan

    index = pd.date_range(start, periods=n, freq="15min", name="timestamp")
    columns = [f"sensor_{i:03d}" for i in range(num_columns)]
    return pd.DataFrame(values, index=index, columns=columns)
