"""The parcel lifecycle and the command lifecycle, each one transition table.

Inbound parcels (a courier delivers to a villager)::

    reserved ─door opened─▶ door_opened ─closed with parcel─▶ deposited ─code issued─▶ notified
       ▲                        │   (or the courier confirms)                          │
       └──── closed empty ──────┘                                                      │
    notified ─picked up─▶ picked_up          notified ─deadline passed─▶ expired       │
    expired / notified ─carrier takes it─▶ returned     reserved / door_opened ─cancel─▶ cancelled

Outbound parcels (a villager or co-operative sends produce)::

    booked ──closed with parcel──▶ dropped_off ──carrier takes it──▶ collected
    booked ──cancel──▶ cancelled

Events arrive from two replicas and from lockers that were offline, so the table also accepts
the orders those can produce (a door closing with the parcel inside before its opening was
processed). Anything else raises :class:`IllegalTransition`, naming state and event.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

St = TypeVar("St", bound=enum.Enum)
Ev = TypeVar("Ev", bound=enum.Enum)


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class ParcelState(enum.StrEnum):
    RESERVED = "reserved"
    DOOR_OPENED = "door_opened"
    DEPOSITED = "deposited"
    NOTIFIED = "notified"
    PICKED_UP = "picked_up"
    EXPIRED = "expired"
    RETURNED = "returned"
    CANCELLED = "cancelled"
    BOOKED = "booked"
    DROPPED_OFF = "dropped_off"
    COLLECTED = "collected"


class ParcelEvent(enum.StrEnum):
    DOOR_OPENED = "door_opened"
    CLOSED_WITH_PARCEL = "closed_with_parcel"
    CLOSED_EMPTY = "closed_empty"
    CONFIRMED = "confirmed"
    CODE_ISSUED = "code_issued"
    PICKED_UP = "picked_up"
    DEADLINE_PASSED = "deadline_passed"
    TAKEN_BY_CARRIER = "taken_by_carrier"
    CANCELLED = "cancelled"


S, E = ParcelState, ParcelEvent

PARCEL_TRANSITIONS: dict[tuple[ParcelState, ParcelEvent], ParcelState] = {
    # inbound: deposit
    (S.RESERVED, E.DOOR_OPENED): S.DOOR_OPENED,
    (S.RESERVED, E.CLOSED_WITH_PARCEL): S.DEPOSITED,  # the opening was processed late
    (S.RESERVED, E.CONFIRMED): S.DEPOSITED,
    (S.RESERVED, E.CANCELLED): S.CANCELLED,
    (S.DOOR_OPENED, E.CLOSED_WITH_PARCEL): S.DEPOSITED,
    (S.DOOR_OPENED, E.CLOSED_EMPTY): S.RESERVED,
    (S.DOOR_OPENED, E.CONFIRMED): S.DEPOSITED,
    (S.DOOR_OPENED, E.CANCELLED): S.CANCELLED,
    (S.DEPOSITED, E.CODE_ISSUED): S.NOTIFIED,
    # inbound: pickup, expiry, return
    (S.NOTIFIED, E.PICKED_UP): S.PICKED_UP,
    (S.NOTIFIED, E.DEADLINE_PASSED): S.EXPIRED,
    (S.NOTIFIED, E.TAKEN_BY_CARRIER): S.RETURNED,  # the carrier recalls it
    (S.EXPIRED, E.PICKED_UP): S.PICKED_UP,  # a pickup made offline before the deadline
    (S.EXPIRED, E.TAKEN_BY_CARRIER): S.RETURNED,
    # outbound
    (S.BOOKED, E.CLOSED_WITH_PARCEL): S.DROPPED_OFF,
    (S.BOOKED, E.CANCELLED): S.CANCELLED,
    (S.DROPPED_OFF, E.TAKEN_BY_CARRIER): S.COLLECTED,
}
"""The parcel lifecycle: (state, event) → next state. Nothing else is allowed."""

FINAL_STATES = frozenset({S.PICKED_UP, S.RETURNED, S.CANCELLED, S.COLLECTED})
HOLDING_STATES = frozenset(
    {S.RESERVED, S.DOOR_OPENED, S.DEPOSITED, S.NOTIFIED, S.EXPIRED, S.BOOKED, S.DROPPED_OFF}
)
"""States in which a parcel holds its compartment (unique per compartment in the database)."""

INBOUND_STATES = frozenset(
    {S.RESERVED, S.DOOR_OPENED, S.DEPOSITED, S.NOTIFIED, S.PICKED_UP, S.EXPIRED, S.RETURNED}
)
OUTBOUND_STATES = frozenset({S.BOOKED, S.DROPPED_OFF, S.COLLECTED})


class IllegalTransition(Exception):
    """An event that the lifecycle does not allow in the current state."""

    def __init__(self, kind: str, state: str, event: str) -> None:
        super().__init__(f"{kind} in state {state!r} cannot take event {event!r}")
        self.kind, self.state, self.event = kind, state, event


def step(table: Mapping[tuple[St, Ev], St], kind: str, state: St, event: Ev) -> St:
    """Return the state ``table`` gives after ``event``; raise :class:`IllegalTransition`
    naming ``kind``, state and event when the table has no such step."""
    try:
        return table[state, event]
    except KeyError:
        raise IllegalTransition(kind, str(state), str(event)) from None


def next_parcel_state(state: ParcelState, event: ParcelEvent) -> ParcelState:
    """Return the state after ``event``. Raises :class:`IllegalTransition`."""
    return step(PARCEL_TRANSITIONS, "parcel", state, event)


class CommandState(enum.StrEnum):
    PENDING = "pending"  # stored, not yet sent
    SENT = "sent"  # sent at least once, no result yet; retried until it expires
    SUCCEEDED = "succeeded"  # the locker executed it (result ok)
    FAILED = "failed"  # executed, the hardware did not do it (e.g. door jammed)
    REFUSED = "refused"  # the locker refused it (reason kept)
    EXPIRED = "expired"  # no result before it expired: given up
    CANCELLED = "cancelled"  # withdrawn before it was answered


class CommandEvent(enum.StrEnum):
    SENT = "sent"
    RESULT_OK = "result_ok"
    RESULT_FAILED = "result_failed"
    RESULT_REFUSED = "result_refused"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


C, CE = CommandState, CommandEvent

COMMAND_TRANSITIONS: dict[tuple[CommandState, CommandEvent], CommandState] = {
    (C.PENDING, CE.SENT): C.SENT,
    (C.PENDING, CE.EXPIRED): C.EXPIRED,
    (C.PENDING, CE.CANCELLED): C.CANCELLED,
    (C.PENDING, CE.RESULT_OK): C.SUCCEEDED,  # a result can overtake our own bookkeeping
    (C.PENDING, CE.RESULT_FAILED): C.FAILED,
    (C.PENDING, CE.RESULT_REFUSED): C.REFUSED,
    (C.SENT, CE.SENT): C.SENT,
    (C.SENT, CE.RESULT_OK): C.SUCCEEDED,
    (C.SENT, CE.RESULT_FAILED): C.FAILED,
    (C.SENT, CE.RESULT_REFUSED): C.REFUSED,
    (C.SENT, CE.EXPIRED): C.EXPIRED,
    (C.SENT, CE.CANCELLED): C.CANCELLED,
    # A result that arrives after we gave up still tells the truth about the door.
    (C.EXPIRED, CE.RESULT_OK): C.SUCCEEDED,
    (C.EXPIRED, CE.RESULT_FAILED): C.FAILED,
    (C.CANCELLED, CE.RESULT_OK): C.SUCCEEDED,
    (C.CANCELLED, CE.RESULT_FAILED): C.FAILED,
}
"""The command lifecycle: (state, event) → next state."""

OPEN_COMMAND_STATES = frozenset({C.PENDING, C.SENT})


def next_command_state(state: CommandState, event: CommandEvent) -> CommandState:
    """Return the state after ``event``. Raises :class:`IllegalTransition`."""
    return step(COMMAND_TRANSITIONS, "command", state, event)
