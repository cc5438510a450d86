"""The door state machine of one compartment: one table, in one place.

The firmware sees a compartment through its lock actuator (with a feedback contact that says
whether the bolt really retracted) and its door sensor. Those combine into five phases::

    LOCKED ──release──▶ RELEASING ──lock_confirmed──▶ RELEASED ──door_opened──▶ OPEN
      ▲                    │ lock_stuck                  │ release_expired        │
      │                    ▼                             ▼                        │
      │◀──jam_cleared── JAMMED            LOCKED (relocked silently)             │
      └◀──────────────────────────────── door_closed ────────────────────────────┘

    LOCKED ──door_opened──▶ OPEN   (nothing released the lock: the door was forced)

Decisions recorded here (see also docs/simulator.md):

* The result of an open command reports what the *lock* did, known ``LOCK_ACTUATION_MS`` after
  the pulse from the feedback contact: ``opened`` (bolt retracted) or ``door_jammed`` (bolt
  stuck). The door opening is a separate ``door_opened`` event, when a person opens it.
* A released lock that nobody opens within ``lock_release_s`` relocks silently: no
  ``door_closed`` (the door never opened) and no jam. Only a stuck bolt (the *door jam* fault)
  gives ``door_jammed``, and takes the compartment out of service until a technician clears it.
* A door that opens while its bolt is engaged (LOCKED or JAMMED) was forced: ``door_forced``.

:func:`door_step` looks a transition up; a pair not in :data:`DOOR_TABLE` raises
:class:`IllegalDoorTransition`, naming the phase and the input.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

LOCK_ACTUATION_MS = 500
"""How long after the release pulse the lock's feedback contact is read."""


class DoorPhase(enum.StrEnum):
    LOCKED = "locked"  # door closed, bolt engaged
    RELEASING = "releasing"  # release pulse sent, waiting for the feedback contact
    RELEASED = "released"  # bolt retracted, door still closed, waiting for someone to open it
    OPEN = "open"  # door open (the bolt re-engages when it closes)
    JAMMED = "jammed"  # the bolt did not retract: out of service until cleared


class DoorInput(enum.StrEnum):
    RELEASE = "release"  # a command or a pickup code asks for the lock to be released
    LOCK_CONFIRMED = "lock_confirmed"  # feedback contact: bolt retracted
    LOCK_STUCK = "lock_stuck"  # feedback contact: bolt still engaged
    DOOR_OPENED = "door_opened"  # door sensor: open
    DOOR_CLOSED = "door_closed"  # door sensor: closed
    RELEASE_EXPIRED = "release_expired"  # lock_release_s passed with the door still closed
    JAM_CLEARED = "jam_cleared"  # a technician freed the bolt


class DoorEffect(enum.StrEnum):
    """What the firmware does and reports on a transition."""

    PULSE_LOCK = "pulse_lock"  # fire the solenoid; read the feedback after LOCK_ACTUATION_MS
    RELEASE_OK = "release_ok"  # result "opened"; wait lock_release_s for the door
    RELEASE_AGAIN = "release_again"  # already released: result "opened", wait time restarts
    ALREADY_OPEN = "already_open"  # result "already_open"
    JAMMED = "jammed"  # door_jammed event, failed result, compartment out of service
    OPENED = "opened"  # door_opened event with the cause of the release
    OPENED_BEFORE_FEEDBACK = "opened_before_feedback"  # result "opened" and door_opened
    FORCED = "forced"  # door_forced event; the door is open
    CLOSED = "closed"  # door_closed event with occupancy and how long it was open
    RELOCKED = "relocked"  # nobody opened the door: relock without any event
    CLEARED = "cleared"  # sensor_recovered (lock): back in service


@dataclass(frozen=True, slots=True)
class DoorTransition:
    target: DoorPhase
    effect: DoorEffect


Ph, In, Ef = DoorPhase, DoorInput, DoorEffect

DOOR_TABLE: dict[tuple[DoorPhase, DoorInput], DoorTransition] = {
    (Ph.LOCKED, In.RELEASE): DoorTransition(Ph.RELEASING, Ef.PULSE_LOCK),
    (Ph.LOCKED, In.DOOR_OPENED): DoorTransition(Ph.OPEN, Ef.FORCED),
    (Ph.RELEASING, In.LOCK_CONFIRMED): DoorTransition(Ph.RELEASED, Ef.RELEASE_OK),
    (Ph.RELEASING, In.LOCK_STUCK): DoorTransition(Ph.JAMMED, Ef.JAMMED),
    (Ph.RELEASING, In.DOOR_OPENED): DoorTransition(Ph.OPEN, Ef.OPENED_BEFORE_FEEDBACK),
    (Ph.RELEASED, In.RELEASE): DoorTransition(Ph.RELEASED, Ef.RELEASE_AGAIN),
    (Ph.RELEASED, In.DOOR_OPENED): DoorTransition(Ph.OPEN, Ef.OPENED),
    (Ph.RELEASED, In.RELEASE_EXPIRED): DoorTransition(Ph.LOCKED, Ef.RELOCKED),
    (Ph.OPEN, In.RELEASE): DoorTransition(Ph.OPEN, Ef.ALREADY_OPEN),
    (Ph.OPEN, In.DOOR_CLOSED): DoorTransition(Ph.LOCKED, Ef.CLOSED),
    (Ph.JAMMED, In.DOOR_OPENED): DoorTransition(Ph.OPEN, Ef.FORCED),
    (Ph.JAMMED, In.JAM_CLEARED): DoorTransition(Ph.LOCKED, Ef.CLEARED),
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
