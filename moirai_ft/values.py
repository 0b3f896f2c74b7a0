"""A config choice's plain value: an enum member of the schema (`SchedulerName.constant`) or the string a config,
an older job's file or a test gives (`"constant"`) read the same way. Below every layer that reads choices."""

from __future__ import annotations

from typing import Any


def plain(value: Any) -> Any:
    """The member's value for an enum member, else the value itself."""
    return getattr(value, "value", value)
