"""Alarms: what can go wrong with a locker, how bad it is, and the one lifecycle table.

An alarm is *open* from the moment it is raised until it is cleared::

    active ─acknowledge─▶ acknowledged ─clear─▶ cleared
       └──────────────────── clear ───────────────▲

A repeat of an open alarm (the same locker, compartment and type) does not open a second one:
it bumps the open alarm's counter and ``last_seen_at`` and leaves its state alone, so an
operator who acknowledged a flapping door is not asked again. A cleared alarm is history and
takes no event at all; the next occurrence opens a new alarm. Anything else raises
:class:`~controller.domain.states.IllegalTransition`.

The module also holds the pure rules that decide when a reading is an alarm: clock skew and
firmware older than the fleet's minimum.
"""

from __future__ import annotations

import enum
import re
from datetime import datetime, timedelta

from controller.domain.states import step

FLEET = ""
"""The ``locker_id`` of an alarm about the fleet as a whole (an opening spike)."""

NO_COMPARTMENT = ""
"""The ``compartment`` of an alarm about a whole locker."""


class Severity(enum.StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    WARNING = "warning"


SEVERITY_ORDER = (Severity.CRITICAL, Severity.MAJOR, Severity.MINOR, Severity.WARNING)


class AlarmType(enum.StrEnum):
    DOOR_FORCED = "door_forced"  # a door opened with no command, code or service key behind it
    TAMPER = "tamper"
    OPEN_SPIKE = "open_spike"  # remote openings hit a limit
    DOOR_JAMMED = "door_jammed"
    DOOR_LEFT_OPEN = "door_left_open"
    TEMPERATURE_EXCURSION = "temperature_excursion"
    LOCKER_OFFLINE = "locker_offline"
    LOW_BATTERY = "low_battery"
    ON_BATTERY = "on_battery"
    SENSOR_FAULT = "sensor_fault"
    CLOCK_SKEW = "clock_skew"
    KEYPAD_LOCKOUT = "keypad_lockout"  # too many wrong codes typed at one locker
    FIRMWARE_OUTDATED = "firmware_outdated"


SEVERITY_OF: dict[AlarmType, Severity] = {
    AlarmType.DOOR_FORCED: Severity.CRITICAL,
    AlarmType.TAMPER: Severity.CRITICAL,
    AlarmType.OPEN_SPIKE: Severity.CRITICAL,
    AlarmType.DOOR_JAMMED: Severity.MAJOR,
    AlarmType.DOOR_LEFT_OPEN: Severity.MAJOR,
    AlarmType.TEMPERATURE_EXCURSION: Severity.MAJOR,
    AlarmType.LOCKER_OFFLINE: Severity.MAJOR,
    AlarmType.LOW_BATTERY: Severity.MAJOR,
    AlarmType.ON_BATTERY: Severity.MINOR,
    AlarmType.SENSOR_FAULT: Severity.MINOR,
    AlarmType.CLOCK_SKEW: Severity.MINOR,
    AlarmType.KEYPAD_LOCKOUT: Severity.MINOR,
    AlarmType.FIRMWARE_OUTDATED: Severity.WARNING,
}
"""How bad each type is. Security events are critical: a human must look at them."""


class AlarmState(enum.StrEnum):
    ACTIVE = "active"  # raised, nobody has acknowledged it yet
    ACKNOWLEDGED = "acknowledged"  # an operator has seen it; the cause may persist
    CLEARED = "cleared"  # over (the device said so, or an operator closed it): history


class AlarmEvent(enum.StrEnum):
    REPEATED = "repeated"
    ACKNOWLEDGE = "acknowledge"
    CLEAR = "clear"


A, AE = AlarmState, AlarmEvent

ALARM_TRANSITIONS: dict[tuple[AlarmState, AlarmEvent], AlarmState] = {
    (A.ACTIVE, AE.REPEATED): A.ACTIVE,
    (A.ACTIVE, AE.ACKNOWLEDGE): A.ACKNOWLEDGED,
    (A.ACTIVE, AE.CLEAR): A.CLEARED,
    (A.ACKNOWLEDGED, AE.REPEATED): A.ACKNOWLEDGED,
    (A.ACKNOWLEDGED, AE.CLEAR): A.CLEARED,
}
"""The alarm lifecycle: (state, event) → next state. Nothing else is allowed."""

OPEN_ALARM_STATES = frozenset({A.ACTIVE, A.ACKNOWLEDGED})


def next_alarm_state(state: AlarmState, event: AlarmEvent) -> AlarmState:
    """Return the state after ``event``. Raises :class:`IllegalTransition`."""
    return step(ALARM_TRANSITIONS, "alarm", state, event)


def clock_skew(locker_time: datetime, received_at: datetime, threshold: timedelta) -> float | None:
    """Return the locker clock's offset in seconds if it is beyond ``threshold``, else None.

    Only meaningful for messages sent as they are made (births, telemetry), not for events
    that waited in the locker's buffer while it was offline.
    """
    offset = locker_time - received_at
    return offset.total_seconds() if abs(offset) > threshold else None


_VERSION = re.compile(r"([0-9]+)\.([0-9]+)\.([0-9]+)(-[0-9A-Za-z.-]+)?")


def version_key(version: str) -> tuple[int, int, int, int]:
    """Return a sortable key of a ``major.minor.patch[-pre][+build]`` version.

    A pre-release sorts before its release; build metadata is ignored. Raises ``ValueError``
    for anything else.
    """
    match = _VERSION.match(version)
    if match is None:
        raise ValueError(f"not a version: {version!r}")
    major, minor, patch, pre = match.groups()
    return int(major), int(minor), int(patch), 0 if pre else 1


def firmware_outdated(reported: str, minimum: str | None) -> bool:
    """Return whether ``reported`` is older than the fleet's ``minimum`` (None: no minimum)."""
    if not minimum:
        return False
    return version_key(reported) < version_key(minimum)
