"""`budget=2h`, `45min`, `90s`, `1h30min`, `1.5h`, `2d`: a wall-clock duration in seconds, and back to text."""

from __future__ import annotations

import math
import re

from moirai_ft.errors import UserError

_UNITS = {"s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
          "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
          "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
          "d": 86400, "day": 86400, "days": 86400}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]+)")


def parse_duration(text: str, key: str = "budget") -> float:
    """Seconds in `text`: one or more <number><unit> parts (s, min, h, d). A bare number is refused: 90
    minutes and 90 seconds differ by a sweep."""
    raw = str(text).strip().lower().replace(" ", "")
    hint = f"give a number with a unit, e.g. {key}=2h, {key}=45min, {key}=1h30min or {key}=90s"
    if re.fullmatch(r"\d+(\.\d*)?", raw):
        raise UserError(f"{key}={text} has no unit; {hint}")
    parts = _PART.findall(raw)
    if not raw or "".join(n + u for n, u in parts) != raw:
        raise UserError(f"{key}={text} is not a duration; {hint}")
    seconds = 0.0
    for number, unit in parts:
        if unit not in _UNITS:
            raise UserError(f"{key}={text}: unknown unit {unit!r}; {hint}")
        seconds += float(number) * _UNITS[unit]
    if not seconds > 0 or not math.isfinite(seconds):
        raise UserError(f"{key}={text} must be longer than 0; {hint}")
    return seconds


def format_duration(seconds: float | None) -> str:
    """`42 s`, `3.5 min`, `2 h 05 min`: short and readable at every scale."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    hours, rest = divmod(round(seconds / 60), 60)
    return f"{hours} h {rest:02d} min"
