"""Clocks for the firmware core: the real one, and one a test moves by hand.

The locker never reads the time itself; it asks the :class:`Clock` it was given. Wall-clock
milliseconds since the Unix epoch are what the protocol puts in ``ts`` and compares with a
command's ``expires_at``, so that is what a clock returns. A locker's own real-time clock may run
off true time (the *clock skew* fault): that offset lives in the locker, on top of its clock.
"""

from __future__ import annotations

import time
from typing import Protocol

DEFAULT_START_MS = 1_735_689_600_000
"""2025-01-01T00:00:00Z: where a :class:`ManualClock` starts unless told otherwise."""


class Clock(Protocol):
    """Something that tells the time in milliseconds since the Unix epoch."""

    def now_ms(self) -> int: ...


class SystemClock:
    """The machine's wall clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to, for tests and discrete-event simulation."""

    def __init__(self, start_ms: int = DEFAULT_START_MS) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, ms: int) -> int:
        """Move the clock forward by ``ms`` and return the new time.

        Raises :class:`ValueError` if ``ms`` is negative: time does not run backwards.
        """
        if ms < 0:
            raise ValueError(f"cannot advance a clock by {ms} ms")
        self._now += ms
        return self._now

    def set(self, now_ms: int) -> None:
        """Move the clock to ``now_ms`` (not earlier than it is). Raises :class:`ValueError`."""
        if now_ms < self._now:
            raise ValueError(f"cannot move a clock back from {self._now} to {now_ms}")
        self._now = now_ms


class ScaledClock:
    """A clock that runs ``scale`` times as fast as the wall clock, from now on.

    For fleets without a controller that need hours of locker life in minutes (soak tests):
    heartbeats, door alarms, retransmissions and faults all run faster. A controller signing
    commands with real time would find them expired by such a locker's clock, so whoever
    commands a scaled fleet takes the time from this clock.
    """

    def __init__(self, scale: float, base: Clock | None = None) -> None:
        if scale <= 0:
            raise ValueError(f"a clock cannot run at {scale} times real speed")
        self.scale = scale
        self._base = base or SystemClock()
        self._origin = self._base.now_ms()

    def now_ms(self) -> int:
        elapsed = self._base.now_ms() - self._origin
        return self._origin + int(elapsed * self.scale)
