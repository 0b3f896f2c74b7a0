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


def building_plant(num_days: int, seed: int = 0, start: str = "2024-01-01", num_sensors: int = 0) -> pd.DataFrame:
    """The embedded building with named plant columns whose loads are driven by covariates (`data=building`):

    - `outdoor_temp` (deg C): seasonal and daily swings plus weather fronts (a new level every 4-12 hours,
      reached within an hour), so the next hours are not in the recent past; a forecast knows them ahead;
    - `occupied` (0/1): the schedule, known ahead: weekdays from 6-9h to 16-20h (a different hour every
      day), one working day in ten off, the odd weekend event;
    - `ahu_{1,2}_setpoint` (deg C): supply-air setpoints an operator resets now and then (known up to now);
    - `ahu_{1,2}_supply_temp` (deg C): at the setpoint while the fans run (occupied), drifting to the
      mixed air temperature when they stop; `chiller_kw`: a standby draw plus a cooling load that rises
      with the outdoor temperature above 8 deg C, half again as much while occupied.

    `num_sensors` generic columns of `building_telemetry` come first when asked (the same values it gives).
    """
    rng = np.random.default_rng([seed, 15])  # its own stream: building_telemetry's columns are unchanged
    n = num_days * STEPS_PER_DAY
    t = np.arange(n)
    day = t // STEPS_PER_DAY
    hour = (t % STEPS_PER_DAY) / 4.0

    # weather fronts: a new level every 4 to 12 hours, reached within about an hour, so the next hours are
    # not in the recent past (a forecast knows them)
    held = rng.integers(16, 49, n // 16 + 2)
    fronts = np.repeat(rng.normal(0.0, 4.0, len(held)), held)[:n]
    fronts = np.convolve(np.pad(fronts, (2, 1), mode="edge"), np.ones(4) / 4, mode="valid")
    outdoor = (
        18 + 6 * np.sin(2 * np.pi * (t / STEPS_PER_DAY - 100) / 365) + 3 * np.sin(2 * np.pi * (hour - 9) / 24)
        + fronts + 0.2 * rng.standard_normal(n)
    )

    working = (day % 7 < 5) & (rng.random(num_days) >= 0.1)[day]
    event = (day % 7 >= 5) & (rng.random(num_days) < 0.15)[day]
    opens, closes = rng.integers(24, 37, num_days)[day] / 4, rng.integers(64, 81, num_days)[day] / 4  # 6-9h, 16-20h
    occupied = ((working | event) & (hour >= opens) & (hour < closes)).astype(np.float32)

    columns: dict[str, np.ndarray] = {"outdoor_temp": outdoor, "occupied": occupied}
    mixed = 0.7 * 22.0 + 0.3 * outdoor  # return air mixed with outdoor air, what the coils see with fans off
    for k in (1, 2):
        resets = np.repeat(rng.choice([12.0, 13.0, 14.0, 15.0], num_days // 2 + 2), 2 * STEPS_PER_DAY)[:n]
        columns[f"ahu_{k}_setpoint"] = resets
        follow = np.convolve(np.pad(occupied, (3, 0), mode="edge"), np.ones(4) / 4, mode="valid")  # fans spin up
        columns[f"ahu_{k}_supply_temp"] = follow * resets + (1 - follow) * mixed + 0.15 * rng.standard_normal(n)
    # cooling load: outdoor heat gains, more with people and lights in; a standby draw
    cooling = 1.5 * np.maximum(outdoor - 8, 0) * (0.5 + 0.5 * occupied)
    columns["chiller_kw"] = 3 + cooling + 0.3 * rng.standard_normal(n)

    index = pd.date_range(start, periods=n, freq="15min", name="timestamp")
    plant = pd.DataFrame({k: v.astype(np.float32) for k, v in columns.items()}, index=index)
    if num_sensors:
        plant = pd.concat([building_telemetry(num_sensors, num_days, seed, start), plant], axis=1)
    return plant
