"""The event buffer: sequenced messages kept until a signed acknowledgement, and resent.

Births, events and command results go into the buffer (held in :class:`NonVolatile`, so they
survive reboots) under their ``(boot_id, seq)``. While connected the locker sends them oldest
first, at most ``max_in_flight`` unacknowledged at a time; one not acknowledged within
``retransmit_ms`` is sent again, the wait doubling each time up to ``retransmit_max_ms`` (a
locker facing a silent controller keeps trying without flooding the uplink). An acknowledgement
removes what it names; a lost connection makes everything in flight unsent again, to be replayed
in order on the next connection.

The buffer holds at most ``capacity`` messages. What does not fit is dropped *by the caller*
(the locker), which counts it and reports it with an ``events_dropped`` event once there is room
again: overflow is never silent. Only the in-flight bookkeeping here is volatile.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from firmware_sim.store import Buffered
from protocol.messages import SeqRange

DEFAULT_CAPACITY = 2_000
DEFAULT_MAX_IN_FLIGHT = 50
DEFAULT_RETRANSMIT_MS = 10_000
DEFAULT_RETRANSMIT_MAX_MS = 300_000


@dataclass(slots=True)
class _InFlight:
    sent_at: int
    attempts: int


@dataclass(frozen=True, slots=True)
class OutboxLimits:
    capacity: int = DEFAULT_CAPACITY
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    retransmit_ms: int = DEFAULT_RETRANSMIT_MS
    retransmit_max_ms: int = DEFAULT_RETRANSMIT_MAX_MS

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.max_in_flight < 1:
            raise ValueError("capacity and max_in_flight must be at least 1")
        if not 0 < self.retransmit_ms <= self.retransmit_max_ms:
            raise ValueError("need 0 < retransmit_ms <= retransmit_max_ms")


class Outbox:
    """Sending, resending and acknowledging the messages in ``entries``."""

    def __init__(self, entries: dict[tuple[int, int], Buffered], limits: OutboxLimits) -> None:
        self.entries = entries
        self.limits = limits
        self._in_flight: dict[tuple[int, int], _InFlight] = {}
        self.retransmissions = 0

    def __len__(self) -> int:
        return len(self.entries)

    def has_room(self) -> bool:
        return len(self.entries) < self.limits.capacity

    def add(self, entry: Buffered) -> None:
        """Keep ``entry`` (the caller checked :meth:`has_room`, or it is an overflow report)."""
        self.entries[(entry.boot_id, entry.seq)] = entry

    def send_first(self, key: tuple[int, int], now_ms: int) -> Buffered | None:
        """Mark the entry ``key`` as sent now, ahead of older ones (the birth on connect)."""
        entry = self.entries.get(key)
        if entry is not None:
            self._in_flight[key] = _InFlight(now_ms, 1)
        return entry

    def due(self, now_ms: int) -> list[Buffered]:
        """Return what to send now: expired in-flight messages again, then unsent ones, oldest
        first, up to ``max_in_flight`` unacknowledged. Marks them sent at ``now_ms``."""
        out: list[Buffered] = []
        limits = self.limits
        for key, flight in self._in_flight.items():
            wait = min(limits.retransmit_max_ms, limits.retransmit_ms << (flight.attempts - 1))
            if now_ms - flight.sent_at >= wait:
                flight.sent_at = now_ms
                flight.attempts += 1
                self.retransmissions += 1
                out.append(self.entries[key])
        room = limits.max_in_flight - len(self._in_flight)
        if room > 0 and len(self._in_flight) < len(self.entries):
            for key, entry in self.entries.items():
                if key not in self._in_flight:
                    self._in_flight[key] = _InFlight(now_ms, 1)
                    out.append(entry)
                    room -= 1
                    if room == 0:
                        break
        return out

    def next_deadline(self) -> int | None:
        """Return when an in-flight message is next due for resending (None: nothing is)."""
        limits = self.limits
        best: int | None = None
        for flight in self._in_flight.values():
            wait = min(limits.retransmit_max_ms, limits.retransmit_ms << (flight.attempts - 1))
            due = flight.sent_at + wait
            if best is None or due < best:
                best = due
        return best

    def can_send_more(self) -> bool:
        """Whether unsent entries are waiting and the in-flight window has room."""
        return len(self._in_flight) < min(self.limits.max_in_flight, len(self.entries))

    def acknowledge(self, boot_id: int, ranges: Iterable[SeqRange]) -> int:
        """Remove the entries of ``boot_id`` named by ``ranges``; return how many were removed."""
        removed = 0
        for r in ranges:
            if r.last - r.first < len(self.entries):
                keys: Iterable[tuple[int, int]] = ((boot_id, s) for s in range(r.first, r.last + 1))
            else:
                keys = [k for k in self.entries if k[0] == boot_id and r.first <= k[1] <= r.last]
            for key in keys:
                if self.entries.pop(key, None) is not None:
                    self._in_flight.pop(key, None)
                    removed += 1
        return removed

    def connection_lost(self) -> None:
        """Forget what was in flight: all of it is replayed on the next connection."""
        self._in_flight.clear()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)
