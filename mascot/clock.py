"""The app's one clock: now, in UTC, timezone-aware (the store keeps it as naive UTC: schema.as_stored_time)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]  # tests pass their own to move across a day boundary


def utc_now() -> datetime:
    """Now in UTC, with tzinfo."""
    return datetime.now(UTC)
