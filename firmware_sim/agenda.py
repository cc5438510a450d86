"""Things that will happen at given times: people's next steps, faults starting and ending.

An :class:`Agenda` is a heap of ``(time, order, action)``. Whoever drives the simulation (the
discrete-event :class:`~firmware_sim.simulation.Simulation` on a manual clock, or the MQTT fleet
loop on the wall clock) asks for :meth:`Agenda.next_time` and calls :meth:`Agenda.run_due`.
Actions due at the same moment run in the order they were added, so a run is reproducible.
An action that raises is counted in :attr:`Agenda.failures` with its message, not propagated:
one person's impossible step must not stop a fleet.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

Action = Callable[[], None]


@dataclass(order=True, slots=True)
class _Entry:
    at_ms: int
    order: int
    action: Action = field(compare=False)
    label: str = field(compare=False, default="")


class Agenda:
    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._order = itertools.count()
        self.failures: list[str] = []
        self.ran = 0

    def __len__(self) -> int:
        return len(self._heap)

    def at(self, at_ms: int, action: Action, label: str = "") -> None:
        """Run ``action`` at ``at_ms`` (clock milliseconds)."""
        heapq.heappush(self._heap, _Entry(at_ms, next(self._order), action, label))

    def next_time(self) -> int | None:
        """Return when the next action is due, or ``None`` if nothing is scheduled."""
        return self._heap[0].at_ms if self._heap else None

    def run_due(self, now_ms: int, limit: int = 10_000) -> int:
        """Run every action due by ``now_ms`` (at most ``limit``); return how many ran."""
        ran = 0
        while self._heap and self._heap[0].at_ms <= now_ms and ran < limit:
            entry = heapq.heappop(self._heap)
            ran += 1
            try:
                entry.action()
            except Exception as exc:
                self.failures.append(f"{entry.label or 'action'}: {exc}")
        self.ran += ran
        return ran
