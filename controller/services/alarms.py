"""Raising and clearing alarms from what lockers report, inside the ingest's transaction.

An :class:`AlarmBook` holds the open alarms of the lockers one transaction works on (loaded in
one query per batch, and locked: the ingest already holds those lockers' rows, so no other
replica raises or clears their alarms meanwhile). :meth:`AlarmBook.raise_` opens an alarm or,
when one of the same locker, compartment and type is open, counts the repeat;
:meth:`AlarmBook.clear` closes it. The database's partial unique index is the last word on
"one open alarm": a concurrent insert loses, and the loser counts a repeat instead.

:func:`on_event` maps each device event to alarms:

==========================  ==========================================================
door_forced                 raise ``door_forced`` (critical; only a person clears it)
door_opened                 clears ``door_jammed`` of that door; a command-caused opening
                            whose command we never sent raises ``door_forced``
door_left_open / _closed    raise / clear ``door_left_open``
door_jammed                 raise ``door_jammed`` (the compartment leaves service)
sensor_fault / _recovered   raise / clear ``sensor_fault`` (per sensor, in ``detail``)
temperature_excursion       raise ``temperature_excursion`` with the parcel inside and every
 / _restored                reading as evidence; restored clears it, keeping the last reading
power_changed               ``on_battery`` while on battery, ``low_battery`` under the limit
tamper                      raise ``tamper`` (critical; only a person clears it)
code_rejected (locked out)  raise ``keypad_lockout``
==========================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import Alarm
from controller.domain.alarms import (
    NO_COMPARTMENT,
    OPEN_ALARM_STATES,
    SEVERITY_OF,
    AlarmEvent,
    AlarmState,
    AlarmType,
    clock_skew,
    firmware_outdated,
    next_alarm_state,
)
from controller.settings import Settings
from protocol.messages import (
    CodeRejected,
    DoorCause,
    DoorClosed,
    DoorForced,
    DoorJammed,
    DoorLeftOpen,
    DoorOpened,
    PowerChanged,
    PowerSource,
    SensorFault,
    SensorRecovered,
    Tamper,
    TemperatureExcursion,
    TemperatureRestored,
)

MAX_EVIDENCE = 500
"""Readings kept per temperature alarm (the newest); enough for days of telemetry."""

_Key = tuple[str, str, str]


class AlarmBook:
    """The open alarms of some lockers, in one session; see the module docstring."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self._open: dict[_Key, Alarm] = {}
        self._loaded: set[str] = set()

    async def preload(self, locker_ids: Iterable[str]) -> None:
        """Load (and lock) the open alarms of ``locker_ids`` in one query."""
        wanted = sorted(set(locker_ids) - self._loaded)
        if not wanted:
            return
        rows = await self.session.scalars(
            select(Alarm)
            .where(Alarm.locker_id.in_(wanted), Alarm.state.in_(list(OPEN_ALARM_STATES)))
            .order_by(Alarm.id)
            .with_for_update()
        )
        for row in rows:
            self._open[row.locker_id, row.compartment, row.type] = row
        self._loaded.update(wanted)

    async def find(
        self, locker_id: str, type_: AlarmType, compartment: str = NO_COMPARTMENT
    ) -> Alarm | None:
        """Return the open alarm of this key, if any."""
        await self.preload([locker_id])
        return self._open.get((locker_id, compartment, type_.value))

    async def raise_(
        self,
        locker_id: str,
        type_: AlarmType,
        *,
        at: datetime,
        compartment: str = NO_COMPARTMENT,
        detail: dict[str, Any] | None = None,
        parcel_id: int | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> Alarm:
        """Open an alarm, or count a repeat of the open one; return it.

        ``detail`` is merged into the alarm's; ``evidence`` is appended to its readings.
        """
        alarm = await self.find(locker_id, type_, compartment)
        if alarm is None:
            alarm = await self._insert(locker_id, type_, compartment, at, parcel_id)
            if alarm.count == 0:  # ours: the first occurrence
                alarm.count = 1
            else:
                _repeat(alarm, at)
        else:
            _repeat(alarm, at)
        if parcel_id is not None and alarm.parcel_id is None:
            alarm.parcel_id = parcel_id
        _merge(alarm, detail, evidence)
        return alarm

    async def _insert(
        self,
        locker_id: str,
        type_: AlarmType,
        compartment: str,
        at: datetime,
        parcel_id: int | None,
    ) -> Alarm:
        alarm = Alarm(
            locker_id=locker_id, compartment=compartment, type=type_.value,
            severity=SEVERITY_OF[type_].value, state=AlarmState.ACTIVE.value, count=0,
            parcel_id=parcel_id, detail={}, first_seen_at=at, last_seen_at=at,
        )  # fmt: skip
        try:
            async with self.session.begin_nested():
                self.session.add(alarm)
                await self.session.flush()
        except IntegrityError:  # another transaction opened it a moment ago
            found = await self.session.scalar(
                select(Alarm)
                .where(
                    Alarm.locker_id == locker_id,
                    Alarm.compartment == compartment,
                    Alarm.type == type_.value,
                    Alarm.state.in_(list(OPEN_ALARM_STATES)),
                )
                .with_for_update()
            )
            assert found is not None, "the unique index refused it, so it exists"
            alarm = found
        self._open[locker_id, compartment, type_.value] = alarm
        return alarm

    async def clear(
        self,
        locker_id: str,
        type_: AlarmType,
        *,
        at: datetime,
        reason: str,
        compartment: str = NO_COMPARTMENT,
        detail: dict[str, Any] | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> Alarm | None:
        """Clear the open alarm of this key (as the locker reported); return it, if any."""
        alarm = await self.find(locker_id, type_, compartment)
        if alarm is None:
            return None
        _merge(alarm, detail, evidence)
        settle(alarm, AlarmEvent.CLEAR, at=at, user_id=None, reason=reason)
        del self._open[locker_id, compartment, type_.value]
        return alarm


def settle(
    alarm: Alarm, event: AlarmEvent, *, at: datetime, user_id: int | None, reason: str | None
) -> None:
    """Move ``alarm`` through the lifecycle table. Raises ``IllegalTransition``."""
    alarm.state = next_alarm_state(AlarmState(alarm.state), event).value
    if event is AlarmEvent.ACKNOWLEDGE:
        alarm.acknowledged_at, alarm.acknowledged_by_user_id = at, user_id
    elif event is AlarmEvent.CLEAR:
        alarm.cleared_at, alarm.cleared_by_user_id = at, user_id
        alarm.clear_reason = (reason or "")[:200] or None


def _repeat(alarm: Alarm, at: datetime) -> None:
    alarm.state = next_alarm_state(AlarmState(alarm.state), AlarmEvent.REPEATED).value
    alarm.count += 1
    alarm.last_seen_at = max(alarm.last_seen_at, at)


def _merge(alarm: Alarm, detail: dict[str, Any] | None, evidence: dict[str, Any] | None) -> None:
    if not detail and not evidence:
        return
    merged = {**alarm.detail, **(detail or {})}  # a new dict: JSON columns track assignment
    if evidence is not None:
        merged["readings"] = [*alarm.detail.get("readings", []), evidence][-MAX_EVIDENCE:]
    alarm.detail = merged


async def on_event(
    book: AlarmBook,
    locker_id: str,
    data: object,
    *,
    at: datetime,
    locker_ts: datetime,
    parcel_id: int | None = None,
    command_known: bool = True,
    low_battery_pct: int = 20,
) -> None:
    """Raise or clear what one device event means (the table in the module docstring).

    ``parcel_id`` is the parcel held by the event's compartment, ``command_known`` whether a
    command-caused opening names a command we sent.
    """
    ts = locker_ts.isoformat()
    if isinstance(data, DoorForced):
        await book.raise_(
            locker_id, AlarmType.DOOR_FORCED, at=at, compartment=data.compartment,
            detail={"locker_ts": ts, "cause": "no command, code or service key"},
            parcel_id=parcel_id,
        )  # fmt: skip
    elif isinstance(data, DoorOpened):
        if data.cause is DoorCause.COMMAND and not command_known:
            await book.raise_(
                locker_id, AlarmType.DOOR_FORCED, at=at, compartment=data.compartment,
                detail={"locker_ts": ts, "cause": f"unknown command {data.command_id}"},
                parcel_id=parcel_id,
            )  # fmt: skip
        await book.clear(
            locker_id, AlarmType.DOOR_JAMMED, at=at, compartment=data.compartment,
            reason="the door opened again",
        )  # fmt: skip
    elif isinstance(data, DoorLeftOpen):
        await book.raise_(
            locker_id, AlarmType.DOOR_LEFT_OPEN, at=at, compartment=data.compartment,
            detail={"open_for_ms": data.open_for_ms}, parcel_id=parcel_id,
        )  # fmt: skip
    elif isinstance(data, DoorClosed):
        await book.clear(
            locker_id, AlarmType.DOOR_LEFT_OPEN, at=at, compartment=data.compartment,
            reason="door closed", detail={"open_for_ms": data.open_for_ms},
        )  # fmt: skip
    elif isinstance(data, DoorJammed):
        known = await book.find(locker_id, AlarmType.DOOR_JAMMED, data.compartment)
        if known is None or known.detail.get("command_id") != data.command_id:
            # (the command's failed result may have raised it already: one jam, one count)
            await book.raise_(
                locker_id, AlarmType.DOOR_JAMMED, at=at, compartment=data.compartment,
                detail={"command_id": data.command_id}, parcel_id=parcel_id,
            )  # fmt: skip
    elif isinstance(data, SensorFault | SensorRecovered):
        await _sensor(book, locker_id, data, at)
    elif isinstance(data, TemperatureExcursion):
        await book.raise_(
            locker_id, AlarmType.TEMPERATURE_EXCURSION, at=at, compartment=data.compartment,
            parcel_id=parcel_id,
            detail={"min_deci_celsius": data.min_deci_celsius,
                    "max_deci_celsius": data.max_deci_celsius},
            evidence={"at": ts, "deci_celsius": data.deci_celsius, "source": "excursion"},
        )  # fmt: skip
    elif isinstance(data, TemperatureRestored):
        await book.clear(
            locker_id, AlarmType.TEMPERATURE_EXCURSION, at=at, compartment=data.compartment,
            reason="temperature back in range",
            evidence={"at": ts, "deci_celsius": data.deci_celsius, "source": "restored"},
        )  # fmt: skip
    elif isinstance(data, PowerChanged):
        await power(book, locker_id, data.source, data.battery_pct, at, low_battery_pct)
    elif isinstance(data, Tamper):
        await book.raise_(
            locker_id, AlarmType.TAMPER, at=at, detail={"detail": data.detail, "locker_ts": ts}
        )
    elif isinstance(data, CodeRejected) and data.locked_out_ms > 0:
        await book.raise_(
            locker_id, AlarmType.KEYPAD_LOCKOUT, at=at,
            detail={"attempts": data.attempts, "locked_out_ms": data.locked_out_ms},
        )  # fmt: skip


async def _sensor(
    book: AlarmBook, locker_id: str, data: SensorFault | SensorRecovered, at: datetime
) -> None:
    open_alarm = await book.find(locker_id, AlarmType.SENSOR_FAULT, data.compartment)
    faulty = set(open_alarm.detail.get("sensors", [])) if open_alarm else set()
    if isinstance(data, SensorFault):
        await book.raise_(
            locker_id, AlarmType.SENSOR_FAULT, at=at, compartment=data.compartment,
            detail={"sensors": sorted(faulty | {data.sensor.value}), "last": data.detail},
        )  # fmt: skip
        return
    if open_alarm is None:
        return
    faulty.discard(data.sensor.value)
    if faulty:
        open_alarm.detail = {**open_alarm.detail, "sensors": sorted(faulty)}
    else:
        await book.clear(
            locker_id, AlarmType.SENSOR_FAULT, at=at, compartment=data.compartment,
            reason=f"{data.sensor.value} sensor recovered", detail={"sensors": []},
        )  # fmt: skip


async def power(
    book: AlarmBook,
    locker_id: str,
    source: PowerSource,
    battery_pct: int,
    at: datetime,
    low_battery_pct: int,
) -> None:
    """``on_battery`` while the mains are out; ``low_battery`` while on battery and low."""
    detail = {"battery_pct": battery_pct}
    if source is PowerSource.BATTERY:
        await _keep(book, locker_id, AlarmType.ON_BATTERY, at, detail)
    else:
        await book.clear(locker_id, AlarmType.ON_BATTERY, at=at, reason="mains back")
    if source is PowerSource.BATTERY and battery_pct <= low_battery_pct:
        await _keep(book, locker_id, AlarmType.LOW_BATTERY, at, detail)
    else:
        await book.clear(
            locker_id, AlarmType.LOW_BATTERY, at=at, reason="battery fine", detail=detail
        )


async def _keep(
    book: AlarmBook, locker_id: str, type_: AlarmType, at: datetime, detail: dict[str, Any]
) -> None:
    """Raise a condition alarm once; telemetry repeating the condition only refreshes it."""
    alarm = await book.find(locker_id, type_)
    if alarm is None:
        await book.raise_(locker_id, type_, at=at, detail=detail)
    else:
        alarm.last_seen_at = max(alarm.last_seen_at, at)
        alarm.detail = {**alarm.detail, **detail}


async def check_clock(
    book: AlarmBook, locker_id: str, locker_ts: datetime, at: datetime, settings: Settings
) -> None:
    """Raise ``clock_skew`` while the locker's clock is off by more than allowed, else clear."""
    offset = clock_skew(locker_ts, at, timedelta(seconds=settings.clock_skew_alarm_s))
    if offset is None:
        await book.clear(locker_id, AlarmType.CLOCK_SKEW, at=at, reason="clock in step")
    else:
        await _keep(book, locker_id, AlarmType.CLOCK_SKEW, at, {"offset_s": round(offset, 1)})


async def check_firmware(
    book: AlarmBook, locker_id: str, firmware: str, at: datetime, settings: Settings
) -> None:
    """Raise ``firmware_outdated`` for firmware older than the fleet's minimum, else clear."""
    minimum = settings.fleet_min_firmware
    if firmware_outdated(firmware, minimum):
        await _keep(
            book, locker_id, AlarmType.FIRMWARE_OUTDATED, at,
            {"firmware": firmware, "minimum": minimum},
        )  # fmt: skip
    else:
        await book.clear(
            locker_id, AlarmType.FIRMWARE_OUTDATED, at=at, reason=f"firmware {firmware}"
        )


async def temperature_evidence(
    book: AlarmBook, locker_id: str, readings: Iterable[tuple[str, int]], locker_ts: datetime
) -> None:
    """Add telemetry readings to the open temperature alarms of their compartments."""
    for compartment, deci_celsius in readings:
        alarm = await book.find(locker_id, AlarmType.TEMPERATURE_EXCURSION, compartment)
        if alarm is not None:
            evidence = {
                "at": locker_ts.isoformat(), "deci_celsius": deci_celsius, "source": "telemetry",
            }  # fmt: skip
            _merge(alarm, None, evidence)


async def came_back(
    book: AlarmBook, locker_id: str, offline_since: datetime | None, at: datetime
) -> None:
    """Clear ``locker_offline``, noting how long the locker was away."""
    away = (at - offline_since).total_seconds() if offline_since else None
    await book.clear(
        locker_id, AlarmType.LOCKER_OFFLINE, at=at, reason="back online",
        detail={"away_s": away, "back_at": at.isoformat()},
    )  # fmt: skip
