"""Write a building-telemetry export shaped like the real ones: a `timestamp` column at 15 minutes, one
column per sensor with dropouts (empty cells), rows the logger never wrote (missing time steps), and a
text `status` column. Used by the README's "Your own data" example and its test.

    python examples/make_building_csv.py building.csv [--columns 8] [--days 60]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not
from moirai_ft.data.synthetic import STEPS_PER_DAY, building_plant, building_telemetry  # noqa: E402


def write_building_csv(path: Path, columns: int = 8, days: int = 60, seed: int = 0, plant: bool = False) -> Path:
    """The CSV at `path`; deterministic from `seed`. `plant`: the named plant columns of `data=building` too
    (outdoor_temp, occupied, ahu_*_setpoint, ahu_*_supply_temp, chiller_kw), for the column-roles example."""
    rng = np.random.default_rng(seed)
    frame = building_plant(days, seed=seed, num_sensors=columns) if plant else building_telemetry(columns, days, seed=seed)
    hour = frame.index.hour
    frame.insert(0, "status", np.where((hour >= 7) & (hour < 19), "occupied", "unoccupied"))
    lost = rng.choice(len(frame), size=len(frame) // 200, replace=False)  # the logger skipped these steps
    if not plant:  # with the plant, every step: a known covariate (the weather forecast) has no gap in a horizon
        frame = frame.drop(frame.index[lost])
    frame.round(3).to_csv(path, index_label="timestamp", date_format="%Y-%m-%d %H:%M")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description="Write an example building-telemetry CSV.")
    p.add_argument("path", type=Path)
    p.add_argument("--columns", type=int, default=8)
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plant", action="store_true", help="add the plant columns (targets and covariates example)")
    args = p.parse_args()
    write_building_csv(args.path, args.columns, args.days, args.seed, args.plant)
    print(f"wrote {args.path} ({args.days} days x {args.columns} sensors at {24 * 60 // STEPS_PER_DAY} min)")


if __name__ == "__main__":
    main()
