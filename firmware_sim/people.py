"""Simulated people at the lockers: recipients at the keypad, and the attendant for remote opens.

People act through an :class:`~firmware_sim.agenda.Agenda` after human delays drawn from a
seeded random generator, so a run is reproducible. They only do what a person can: open a door
whose lock was released (or force one), put a parcel into an empty compartment, take one out
of a full one, close a door.

* :meth:`People.recipient_picks_up` types a pickup code, waits for the lock to release, opens
  the door, takes the parcel and closes the door (or leaves it open); a wrong code just gets
  typed, and the screen says what happened.
* :class:`Attendant` stands in for the courier, the village agent or the recipient at the
  other end of a remote ``open_compartment``: when a command releases a lock it opens the door,
  puts a parcel in (``deposit``, ``dropoff``) or takes it out (``pickup``, ``agent_pickup``,
  ``return_to_carrier``, ``collection``) and closes the door; for ``service`` it opens and
  closes. The controller's own tests rely on it to complete deposits end to end.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from firmware_sim.agenda import Agenda
from firmware_sim.clock import Clock
from firmware_sim.compartments import Release
from firmware_sim.locker import Locker
from protocol.codes import code_hash
from protocol.messages import DoorCause, OpenPurpose

Span = tuple[int, int]
"""A delay range in milliseconds, inclusive; a delay is drawn uniformly from it."""

PUT_PURPOSES = frozenset({OpenPurpose.DEPOSIT, OpenPurpose.DROPOFF})
TAKE_PURPOSES = frozenset(
    {
        OpenPurpose.PICKUP,
        OpenPurpose.AGENT_PICKUP,
        OpenPurpose.RETURN_TO_CARRIER,
        OpenPurpose.COLLECTION,
    }
)


@dataclass(frozen=True, slots=True)
class Delays:
    """How long people take for each step (milliseconds)."""

    think: Span = (2_000, 8_000)
    """From walking up to the locker to pressing OK on the keypad."""
    open: Span = (1_000, 4_000)
    """From the lock releasing (a click, the screen) to pulling the door open."""
    handle: Span = (2_000, 8_000)
    """Putting a parcel in or taking it out."""
    close: Span = (1_000, 3_000)

    @classmethod
    def fast(cls) -> Delays:
        """Quick hands, for tests: every step 50-200 ms."""
        return cls((50, 200), (50, 200), (50, 200), (50, 200))


@dataclass(frozen=True, slots=True)
class AttendantPolicy:
    """What the attendant does after a remote open (see the module docstring)."""

    delays: Delays = field(default_factory=Delays)
    purposes: frozenset[OpenPurpose] = frozenset(OpenPurpose)
    no_show: float = 0.0
    """Probability that nobody comes: the lock relocks by itself after lock_release_s."""
    leave_open: float = 0.0
    """Probability that the person walks away with the door open (door_left_open alarms)."""


class People:
    """Everyone at a fleet's lockers, acting on one agenda with one seeded random generator."""

    def __init__(self, agenda: Agenda, clock: Clock, seed: int = 0) -> None:
        self.agenda = agenda
        self.clock = clock
        self.rng = random.Random(seed)
        self.counts: Counter[str] = Counter()

    def _later(self, span: Span) -> int:
        return self.clock.now_ms() + self.rng.randint(*span)

    def recipient_picks_up(
        self,
        locker: Locker,
        code: str,
        *,
        delays: Delays | None = None,
        leave_open: bool = False,
    ) -> None:
        """A recipient walks up, types ``code``; if the lock releases, takes the parcel."""
        pace = delays or Delays()
        hashed = code_hash(locker.spec.code_key, locker.locker_id, code)

        def on_release(watched: Locker, release: Release) -> None:
            if release.request.code_hash != hashed:
                return
            watched.observers.remove(on_release)
            self._collect(watched, release.compartment, pace, leave_open)

        def type_code() -> None:
            accepted_before = locker.counters["pickup"]
            locker.observers.append(on_release)
            locker.keypad_enter(code)
            # The lock releases a moment after the code is accepted (the actuator needs time),
            # so wait for the release only if the keypad took the code.
            if locker.counters["pickup"] == accepted_before and on_release in locker.observers:
                locker.observers.remove(on_release)  # a wrong or stale code: nothing to open
                self.counts["codes_refused"] += 1

        self.counts["recipients"] += 1
        self.agenda.at(self._later(pace.think), type_code, f"{locker.locker_id} types a code")

    def recipient_types(self, locker: Locker, code: str, *, delays: Delays | None = None) -> None:
        """Someone types ``code`` (right or wrong) and does nothing else."""
        pace = delays or Delays()
        self.agenda.at(
            self._later(pace.think), lambda: locker.keypad_enter(code), f"{locker.locker_id} types"
        )

    def _collect(self, locker: Locker, compartment: str, pace: Delays, leave_open: bool) -> None:
        at = self._later(pace.open)
        self.agenda.at(at, lambda: self.open(locker, compartment), "open door")
        at += self.rng.randint(*pace.handle)
        self.agenda.at(at, lambda: self.take(locker, compartment), "take parcel")
        if not leave_open:
            at += self.rng.randint(*pace.close)
            self.agenda.at(at, lambda: self.close(locker, compartment), "close door")
        self.counts["pickups"] += 1

    # Single steps, each done only if a person physically can.

    def open(self, locker: Locker, compartment: str) -> None:
        """Pull the door open if its lock is released (a released door usually stands ajar
        already); a relocked or stuck door is counted, not forced."""
        hw = locker.cabinet.compartment(compartment)
        if hw.door_open:
            return
        if hw.door_stuck:
            self.counts["stuck_doors"] += 1
        elif locker.door_unlatched(compartment):
            locker.open_door(compartment)
        else:
            self.counts["too_late"] += 1

    def take(self, locker: Locker, compartment: str) -> None:
        hw = locker.cabinet.compartment(compartment)
        if hw.door_open and hw.occupied:
            locker.take_item(compartment)

    def put(self, locker: Locker, compartment: str) -> None:
        hw = locker.cabinet.compartment(compartment)
        if hw.door_open and not hw.occupied:
            locker.put_item(compartment)

    def close(self, locker: Locker, compartment: str) -> None:
        if locker.cabinet.compartment(compartment).door_open:
            locker.close_door(compartment)

    def attend(self, locker: Locker, policy: AttendantPolicy | None = None) -> Attendant:
        """Install an attendant on ``locker`` and return it."""
        attendant = Attendant(self, policy or AttendantPolicy())
        locker.observers.append(attendant)
        return attendant


class Attendant:
    """Completes remote opens physically (an observer of :class:`Locker` releases)."""

    def __init__(self, people: People, policy: AttendantPolicy) -> None:
        self.people = people
        self.policy = policy

    def __call__(self, locker: Locker, release: Release) -> None:
        request = release.request
        if request.cause is not DoorCause.COMMAND or request.purpose not in self.policy.purposes:
            return
        people, policy = self.people, self.policy
        if people.rng.random() < policy.no_show:
            people.counts["attendant_no_shows"] += 1
            return
        cid = release.compartment
        pace = policy.delays
        at = people._later(pace.open)
        people.agenda.at(at, lambda: people.open(locker, cid), "attendant opens")
        at += people.rng.randint(*pace.handle)
        if request.purpose in PUT_PURPOSES:
            people.agenda.at(at, lambda: people.put(locker, cid), "attendant puts a parcel in")
        elif request.purpose in TAKE_PURPOSES:
            people.agenda.at(at, lambda: people.take(locker, cid), "attendant takes a parcel")
        people.counts["attendant_visits"] += 1
        if people.rng.random() < policy.leave_open:
            people.counts["attendant_left_open"] += 1
            return
        at += people.rng.randint(*pace.close)
        people.agenda.at(at, lambda: people.close(locker, cid), "attendant closes")
