"""Frozen snapshots of a locker, for tests, status lines and other threads.

A :class:`LockerView` copies what a locker knows and what is physically true at one moment:
per compartment the firmware's door phase next to the physical door and contents, so a test can
assert on both ("the firmware thinks it is locked, and it really is shut and holds a parcel").
Views are plain frozen values: a fleet hands them across threads without sharing live state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from firmware_sim.door import DoorPhase
from firmware_sim.settings import Settings
from protocol.messages import PowerSource, SizeClass, TemperatureClass

if TYPE_CHECKING:
    from firmware_sim.locker import Locker


@dataclass(frozen=True, slots=True)
class CompartmentView:
    id: str
    size: SizeClass
    temperature: TemperatureClass
    phase: DoorPhase | None
    """The firmware's door phase (None while the board is off)."""
    door_open: bool
    """Whether the door is physically open."""
    occupied: bool
    """Whether a parcel is physically inside."""
    in_service: bool
    deci_celsius: int | None


@dataclass(frozen=True, slots=True)
class LockerView:
    locker_id: str
    boot_id: int
    powered: bool
    connected: bool
    seq: int
    connection: int
    screen: str
    pending_events: int
    in_flight: int
    events_dropped_total: int
    code_cache_version: int
    codes_cached: int
    config_version: int
    settings: Settings
    power: PowerSource
    battery_pct: int
    clock_skew_ms: int
    compartments: dict[str, CompartmentView] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def doors_open(self) -> list[str]:
        """Labels of the compartments whose doors are physically open."""
        return [c.id for c in self.compartments.values() if c.door_open]

    @property
    def released(self) -> list[str]:
        """Labels of the compartments whose lock the firmware has released or that are open."""
        return [
            c.id
            for c in self.compartments.values()
            if c.phase in (DoorPhase.RELEASED, DoorPhase.OPEN)
        ]


def locker_view(locker: Locker) -> LockerView:
    """Return the snapshot of ``locker`` now (call it where the locker lives)."""
    now = locker.clock.now_ms()
    doors = locker.doors
    hardware = locker.cabinet.compartments
    compartments = {}
    for spec in locker.spec.compartments:
        cid = spec.id
        # Compartments nothing has touched yet are in their factory state: the view says so
        # without making them.
        hw = hardware.peek(cid)
        state = doors.states.peek(cid) if locker.powered else None
        if locker.powered and state is None:
            phase: DoorPhase | None = DoorPhase.LOCKED
            in_service = cid not in locker.nv.out_of_service
        else:
            phase = state.phase if state else None
            in_service = doors.in_service(state) if state else False
        compartments[cid] = CompartmentView(
            id=cid,
            size=spec.size,
            temperature=spec.temperature,
            phase=phase,
            door_open=hw.door_open if hw else False,
            occupied=hw.occupied if hw else False,
            in_service=in_service,
            deci_celsius=hw.deci_celsius(now) if hw else None,
        )
    uplink, nv, settings = locker.uplink, locker.nv, locker.settings
    return LockerView(
        locker_id=locker.locker_id,
        boot_id=locker.boot_id,
        powered=locker.powered,
        connected=locker.is_connected,
        seq=uplink.seq,
        connection=uplink.connection,
        screen=locker.screen,
        pending_events=len(uplink.outbox),
        in_flight=uplink.outbox.in_flight,
        events_dropped_total=nv.events_dropped_total,
        code_cache_version=nv.codes.version,
        codes_cached=len(nv.codes.entries),
        config_version=settings.config_version,
        settings=settings,
        power=locker.cabinet.power.source,
        battery_pct=locker.cabinet.power.battery_pct(now),
        clock_skew_ms=locker.cabinet.clock_skew_ms,
        compartments=compartments,
        counters=dict(locker.counters),
    )
