"""The event buffer: sequenced messages kept until a signed acknowledgement, and resent.

Births, events and command results go into the buffer (held in :class:`NonVolatile`, so they
survive reboots) under their ``(boot_id, seq)``. While connected the locker sends them oldest
first, at most ``max_in_flight`` unacknowledged at a time; one not acknowledged within
``retransmit_ms`` is sent again, the wait doubling each time up to ``retransmit_max_ms``
(protocol §5.5: 30 s doubling to 300 s). A lost connection makes everything in flight unsent
again, to be replayed in order on the next connection. Sends from the buffer are paced at
``pace_per_s`` (a token bucket of that size), so a locker back from a day offline does not
flood the uplink; the birth on connecting is never held back.

The buffer holds at most ``capacity`` messages (protocol: at least 1,000); when full, the
caller discards the oldest (:meth:`Outbox.discard_oldest`) and reports it. Only the in-flight
bookkeeping and the pacing are volatile.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from firmware_sim.store import Buffered
from protocol.messages import SeqRange

DEFAULT_CAPACITY = 2_000
DEFAULT_MAX_IN_FLIGHT = 50
DEFAULT_RETRANSMIT_MS = 30_000
DEFAULT_RETRANSMIT_MAX_MS = 300_000
DEFAULT_PACE_PER_S = 20


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
    pace_per_s: int = DEFAULT_PACE_PER_S

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.max_in_flight < 1 or self.pace_per_s < 1:
            raise ValueError("capacity, max_in_flight and pace_per_s must be at least 1")
        if not 0 < self.retransmit_ms <= self.retransmit_max_ms:
            raise ValueError("need 0 < retransmit_ms <= retransmit_max_ms")


class Outbox:
    """Sending, resending and acknowledging the messages in ``entries``."""

    __slots__ = (
        "_in_flight",
        "_refilled",
        "_starved",
        "_tokens",
        "entries",
        "limits",
        "retransmissions",
    )

    def __init__(self, entries: dict[tuple[int, int], Buffered], limits: OutboxLimits) -> None:
        self.entries = entries
        self.limits = limits
        self._in_flight: dict[tuple[int, int], _InFlight] = {}
        self._tokens = float(limits.pace_per_s)
        self._refilled: int | None = None
        self._starved = False
        self.retransmissions = 0

    def __len__(self) -> int:
        return len(self.entries)

    def has_room(self) -> bool:
        return len(self.entries) < self.limits.capacity

    def add(self, entry: Buffered) -> None:
        """Keep ``entry`` (the caller made room with :meth:`discard_oldest` if needed)."""
        self.entries[(entry.boot_id, entry.seq)] = entry

    def discard_oldest(self, prefer_boot: int) -> Buffered | None:
        """Remove and return the oldest entry of boot ``prefer_boot``, or failing that the
        oldest of any boot (None if the buffer is empty)."""
        victim = next((k for k in self.entries if k[0] == prefer_boot), None)
        if victim is None:
            victim = next(iter(self.entries), None)
        if victim is None:
            return None
        self._in_flight.pop(victim, None)
        return self.entries.pop(victim)

    def send_first(self, key: tuple[int, int], now_ms: int) -> Buffered | None:
        """Mark the entry ``key`` as sent now, ahead of older ones (the birth on connect)."""
        entry = self.entries.get(key)
        if entry is not None:
            self._in_flight[key] = _InFlight(now_ms, 1)
        return entry

    def _wait(self, attempts: int) -> int:
        limits = self.limits
        return min(limits.retransmit_max_ms, limits.retransmit_ms << min(attempts - 1, 20))

    def _refill(self, now_ms: int) -> None:
        pace = self.limits.pace_per_s
        if self._refilled is not None:
            self._tokens = min(float(pace), self._tokens + (now_ms - self._refilled) * pace / 1000)
        self._refilled = now_ms

    def due(self, now_ms: int) -> list[Buffered]:
        """Return what to send now: expired in-flight messages again, then unsent ones, oldest
        first, up to ``max_in_flight`` unacknowledged and as the pace allows. Marks them sent
        at ``now_ms``."""
        self._refill(now_ms)
        out: list[Buffered] = []
        self._starved = False
        for key, flight in self._in_flight.items():
            if now_ms - flight.sent_at >= self._wait(flight.attempts):
                if self._tokens < 1:
                    self._starved = True
                    return out
                self._tokens -= 1
                flight.sent_at = now_ms
                flight.attempts += 1
                self.retransmissions += 1
                out.append(self.entries[key])
        room = self.limits.max_in_flight - len(self._in_flight)
        if room > 0 and len(self._in_flight) < len(self.entries):
            for key, entry in self.entries.items():
                if key in self._in_flight:
                    continue
                if self._tokens < 1:
                    self._starved = True
                    break
                self._tokens -= 1
                self._in_flight[key] = _InFlight(now_ms, 1)
                out.append(entry)
                room -= 1
                if room == 0:
                    break
        return out

    def next_deadline(self, now_ms: int) -> int | None:
        """Return when something is next due to be sent (None: nothing is waiting)."""
        best: int | None = None
        if self._starved:  # when the bucket holds a whole token again
            pace = self.limits.pace_per_s
            since = self._refilled if self._refilled is not None else now_ms
            best = since + int((1 - self._tokens) * 1000 / pace) + 1
        for flight in self._in_flight.values():
            due = flight.sent_at + self._wait(flight.attempts)
            if best is None or due < best:
                best = due
        return best

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
        if removed and not self.entries:
            # An emptied dict keeps its table; clearing it gives the memory back (thousands
            # of lockers spend most of their time with an empty buffer).
            self.entries.clear()
            self._in_flight.clear()
        return removed

    def connection_lost(self) -> None:
        """Forget what was in flight: all of it is replayed on the next connection."""
        self._in_flight.clear()
        self._starved = False

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)
