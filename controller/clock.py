"""Time, injected: services take a :class:`Clock` so expiry, retries and leases are tested
without sleeping. Times are timezone-aware UTC datetimes in the database and integer
milliseconds on the wire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Return the current time, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 11, 23, 8, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, **delta: float) -> None:
        self._now += timedelta(**delta)


def to_ms(moment: datetime) -> int:
    """Return ``moment`` as milliseconds since the epoch."""
    return int(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    """Return the UTC datetime of ``ms`` milliseconds since the epoch."""
    return datetime.fromtimestamp(ms / 1000, UTC)
