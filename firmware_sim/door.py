"""The door state machine of one compartment: one table, in one place (protocol §10).

Doors are spring-loaded, as the protocol describes them: releasing the lock lets the door pop
ajar by itself (:data:`LOCK_ACTUATION_MS` after the release pulse), and the latch re-engages
when the door is pushed shut. The firmware sees the lock it drives and the door sensor, which
combine into three phases::

    LOCKED ──release──▶ RELEASED ──door_opened──▶ OPEN ──door_closed──▶ LOCKED
      │                    │ release_expired (lock_release_s, door still shut)
      │                    ▼
      │                 LOCKED, out of service (door_jammed)
      └──door_opened──▶ OPEN   (nothing released the lock: door_forced)

Consequences, all as §10 requires:

* The result of an open command is known when the door opens (``opened``, after the
  ``door_opened`` event) or when ``lock_release_s`` passes without it opening (``door_jammed``,
  after the ``door_jammed`` event; the lock re-engages and the compartment leaves service).
* Since a released door pops open by itself, only a door that is physically stuck (the *door
  jam* fault) produces ``door_jammed``; a door nobody comes to is not a jam but a door left
  open (``door_left_open``, repeated every ``door_open_alarm_s``).
* A door that opens while its lock is engaged was forced (``door_forced``), also after a jam.
* A compartment returns to service when a technician opens it with the service key and shuts it
  again (``door_opened`` with cause ``service``, then ``door_closed``).

:func:`door_step` looks a transition up; a pair not in :data:`DOOR_TABLE` raises
:class:`IllegalDoorTransition`, naming the phase and the input. (Callers refuse a release of a
door that is already released, with ``busy``, before asking the table.)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

LOCK_ACTUATION_MS = 500
"""From the release pulse until the spring has pushed the door ajar."""


class DoorPhase(enum.StrEnum):
    LOCKED = "locked"  # door closed, latch engaged
    RELEASED = "released"  # latch released, door still closed: it should pop open now
    OPEN = "open"  # door open (the latch re-engages when it is shut)


class DoorInput(enum.StrEnum):
    RELEASE = "release"  # a command, a pickup code or the service key releases the lock
    DOOR_OPENED = "door_opened"  # door sensor: open
    DOOR_CLOSED = "door_closed"  # door sensor: closed
    RELEASE_EXPIRED = "release_expired"  # lock_release_s passed with the door still closed


class DoorEffect(enum.StrEnum):
    """What the firmware does and reports on a transition."""

    PULSE_LOCK = "pulse_lock"  # release the latch; wait lock_release_s for the door to open
    ALREADY_OPEN = "already_open"  # result "already_open"
    OPENED = "opened"  # door_opened with the release's cause, then result "opened"
    JAMMED = "jammed"  # relock; door_jammed, then result "door_jammed"; out of service
    FORCED = "forced"  # door_forced: an alarm
    CLOSED = "closed"  # door_closed with occupancy; back in service after a service opening


@dataclass(frozen=True, slots=True)
class DoorTransition:
    target: DoorPhase
    effect: DoorEffect


Ph, In, Ef = DoorPhase, DoorInput, DoorEffect

DOOR_TABLE: dict[tuple[DoorPhase, DoorInput], DoorTransition] = {
    (Ph.LOCKED, In.RELEASE): DoorTransition(Ph.RELEASED, Ef.PULSE_LOCK),
    (Ph.LOCKED, In.DOOR_OPENED): DoorTransition(Ph.OPEN, Ef.FORCED),
    (Ph.RELEASED, In.DOOR_OPENED): DoorTransition(Ph.OPEN, Ef.OPENED),
    (Ph.RELEASED, In.RELEASE_EXPIRED): DoorTransition(Ph.LOCKED, Ef.JAMMED),
    (Ph.OPEN, In.RELEASE): DoorTransition(Ph.OPEN, Ef.ALREADY_OPEN),
    (Ph.OPEN, In.DOOR_CLOSED): DoorTransition(Ph.LOCKED, Ef.CLOSED),
}
"""Every legal (phase, input) pair of the door machine and what it leads to."""

del Ph, In, Ef


class IllegalDoorTransition(Exception):
    """An input arrived that the door machine has no transition for in its current phase."""

    def __init__(self, compartment: str, phase: DoorPhase, given: DoorInput) -> None:
        super().__init__(f"compartment {compartment}: no transition for {given} while {phase}")
        self.compartment = compartment
        self.phase = phase
        self.input = given


def door_step(compartment: str, phase: DoorPhase, given: DoorInput) -> DoorTransition:
    """Return the transition for ``given`` in ``phase``.

    Raises :class:`IllegalDoorTransition` if the table has none.
    """
    transition = DOOR_TABLE.get((phase, given))
    if transition is None:
        raise IllegalDoorTransition(compartment, phase, given)
    return transition
