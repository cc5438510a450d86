"""Frozen snapshots of a locker, for tests, status lines and other threads.

A :class:`LockerView` copies what a locker knows and what is physically true at one moment:
per compartment the firmware's door phase next to the physical door and contents, so a test can
assert on both ("the firmware thinks it is locked, and it really is shut and holds a parcel").
Views are plain frozen values: a fleet hands them across threads without sharing live state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from firmware_sim.door import DoorPhase
from firmware_sim.settings import Settings
from protocol.messages import PowerSource, SizeClass, TemperatureClass


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
