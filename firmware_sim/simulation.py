"""A discrete-event run of lockers on a manual clock, with no network at all.

:class:`Simulation` jumps a :class:`~firmware_sim.clock.ManualClock` from one deadline to the
next (a locker's :meth:`~firmware_sim.locker.Locker.next_deadline_ms` or an agenda entry),
ticks the lockers that are due, runs the agenda, and collects every message the lockers send
into :attr:`Simulation.sent`. A test decides when a locker is connected and feeds it commands
and acknowledgements; hours of locker life take milliseconds, and nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Iterable

from firmware_sim.agenda import Agenda
from firmware_sim.clock import ManualClock
from firmware_sim.locker import Locker
from firmware_sim.uplink import Outgoing
from protocol.codec import decode_device_message
from protocol.messages import DeviceMessage


class Simulation:
    def __init__(
        self, lockers: Iterable[Locker], clock: ManualClock, agenda: Agenda | None = None
    ) -> None:
        self.lockers = {locker.locker_id: locker for locker in lockers}
        self.clock = clock
        self.agenda = agenda or Agenda()
        self.sent: dict[str, list[Outgoing]] = {lid: [] for lid in self.lockers}

    def drain(self) -> None:
        """Collect whatever the lockers have to send."""
        for lid, locker in self.lockers.items():
            self.sent[lid].extend(locker.take_outgoing())

    def next_time(self) -> int | None:
        """Return the clock time of the next thing that will happen (None: nothing will)."""
        times = [t for t in (lk.next_deadline_ms() for lk in self.lockers.values()) if t]
        agenda = self.agenda.next_time()
        if agenda is not None:
            times.append(agenda)
        return min(times, default=None)

    def run_until(self, until_ms: int) -> None:
        """Advance the clock to ``until_ms``, doing everything due on the way, in time order."""
        self.drain()
        while True:
            upcoming = self.next_time()
            if upcoming is None or upcoming > until_ms:
                break
            self.clock.set(max(upcoming, self.clock.now_ms()))
            now = self.clock.now_ms()
            self.agenda.run_due(now)
            for locker in self.lockers.values():
                deadline = locker.next_deadline_ms()
                if deadline is not None and deadline <= now:
                    locker.tick()
            self.drain()
        self.clock.set(max(until_ms, self.clock.now_ms()))
        self.drain()

    def run_for(self, ms: int) -> None:
        """Advance the clock by ``ms`` (see :meth:`run_until`)."""
        self.run_until(self.clock.now_ms() + ms)

    def take_sent(self, locker_id: str) -> list[Outgoing]:
        """Return and forget what ``locker_id`` sent so far."""
        self.drain()
        out, self.sent[locker_id] = self.sent[locker_id], []
        return out

    def take_messages(self, locker_id: str) -> list[DeviceMessage]:
        """Return and forget what ``locker_id`` sent so far, decoded."""
        return [decode_device_message(o.payload) for o in self.take_sent(locker_id)]
