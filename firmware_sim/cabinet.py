"""The physical locker: doors, parcels, sensors, cooling, power supply, radio and real-time clock.

Everything here is the world outside the firmware. It survives a reboot (a parcel stays in its
compartment when the board restarts) and it is what faults act on: a stuck door, a sensor frozen
at one reading, a failed cooling unit, a mains cut, a drifting clock. The firmware
(:mod:`firmware_sim.locker`) only ever sees it through sensor readings.

Continuous quantities (temperature, battery charge, signal strength) are functions of time
rather than simulated step by step, so ten thousand idle lockers cost nothing between samples.

Compartments are made when first touched (:class:`Compartments`): until then an ambient
compartment is in its factory state (door shut, nothing inside, no fault) and takes no memory,
which is what most compartments of a fleet are most of the time. Chilled ones are made at once,
since their temperature is sampled at every heartbeat.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from firmware_sim.spec import CompartmentSpec, LockerSpec
from protocol.messages import PowerSource, TemperatureClass

CHILLED_SETPOINT_DECI_C = 40
AMBIENT_DECI_C = 260
"""Where a chilled compartment drifts to when its cooling fails (a summer day)."""
DEFAULT_RISE_DECI_C_PER_MIN = 5
COOL_DOWN_DECI_C_PER_MIN = 10
BATTERY_RECHARGE_MS = 2 * 3600 * 1000
"""Time the charger needs to fill an empty battery."""
BATTERY_THRESHOLDS = (20, 10)
"""Charge levels (%) whose crossing on battery the firmware reports with power_changed."""


V = TypeVar("V")


class PhysicalActionError(Exception):
    """A person tried something the physical locker does not allow (says what and where)."""


def _wobble(now_ms: int, salt: int, spread: int) -> int:
    """Deterministic small noise in ``-spread..spread`` that changes once a minute."""
    minute = now_ms // 60_000
    return (minute * 2_654_435_761 + salt * 40_503) % (2 * spread + 1) - spread


@dataclass(slots=True)
class CompartmentHardware:
    """One compartment's door, contents, sensors and (if chilled) cooling unit."""

    spec: CompartmentSpec
    salt: int
    door_open: bool = False
    occupied: bool = False
    door_stuck: bool = False
    """The door will not open (a swollen frame, a parcel wedged against it): the jam fault."""
    pops_at: int | None = None
    """When the spring will push the released door ajar (None: no release under way)."""
    door_sensor_stuck: bool | None = None
    """The reading the door sensor is frozen at, while the stuck-sensor fault is on."""
    occupancy_sensor_stuck: bool | None = None
    cooling_failed_at: int | None = None
    cooling_restored_at: int | None = None
    peak_deci_celsius: int = CHILLED_SETPOINT_DECI_C
    rise_deci_c_per_min: int = DEFAULT_RISE_DECI_C_PER_MIN

    @property
    def chilled(self) -> bool:
        return self.spec.temperature is TemperatureClass.CHILLED

    def door_reading(self) -> bool:
        """What the door sensor says (True: open)."""
        return self.door_open if self.door_sensor_stuck is None else self.door_sensor_stuck

    def occupancy_reading(self) -> bool:
        """What the occupancy sensor says (True: something inside)."""
        return self.occupied if self.occupancy_sensor_stuck is None else self.occupancy_sensor_stuck

    def deci_celsius(self, now_ms: int) -> int | None:
        """Return the temperature inside a chilled compartment, or ``None`` for ambient ones."""
        if not self.chilled:
            return None
        base = CHILLED_SETPOINT_DECI_C + _wobble(now_ms, self.salt, 4)
        if self.cooling_failed_at is not None:
            minutes = (now_ms - self.cooling_failed_at) / 60_000
            return min(AMBIENT_DECI_C, base + int(minutes * self.rise_deci_c_per_min))
        if self.cooling_restored_at is not None:
            minutes = (now_ms - self.cooling_restored_at) / 60_000
            return max(base, self.peak_deci_celsius - int(minutes * COOL_DOWN_DECI_C_PER_MIN))
        return base

    def fail_cooling(self, now_ms: int, rise_deci_c_per_min: int) -> None:
        self.rise_deci_c_per_min = rise_deci_c_per_min
        self.cooling_failed_at = now_ms
        self.cooling_restored_at = None

    def restore_cooling(self, now_ms: int) -> None:
        if self.cooling_failed_at is None:
            return
        self.peak_deci_celsius = self.deci_celsius(now_ms) or CHILLED_SETPOINT_DECI_C
        self.cooling_failed_at = None
        self.cooling_restored_at = now_ms


@dataclass(slots=True)
class PowerSupply:
    """Mains with a backup battery; the charge level is computed from when things changed."""

    backup_s: int
    mains: bool = True
    level_pct: float = 100.0
    changed_at: int = 0

    def battery_pct(self, now_ms: int) -> int:
        """Return the battery charge (0-100 %)."""
        elapsed = max(0, now_ms - self.changed_at)
        if self.mains:
            level = self.level_pct + elapsed * 100 / BATTERY_RECHARGE_MS
        elif self.backup_s == 0:
            level = 0.0
        else:
            level = self.level_pct - elapsed * 100 / (self.backup_s * 1000)
        return int(max(0.0, min(100.0, level)))

    @property
    def source(self) -> PowerSource:
        return PowerSource.MAINS if self.mains else PowerSource.BATTERY

    def switch(self, mains: bool, now_ms: int) -> None:
        """Switch to mains (True) or battery (False), keeping the charge level continuous."""
        self.level_pct = float(self.battery_pct(now_ms))
        self.changed_at = now_ms
        self.mains = mains

    def time_at_level(self, pct: int) -> int | None:
        """Return when the battery (draining) reaches ``pct``, or None on mains / below it."""
        if self.mains or self.backup_s == 0 or self.level_pct <= pct:
            return None
        return self.changed_at + int((self.level_pct - pct) * self.backup_s * 10)


@functools.lru_cache(maxsize=1024)
def layout_index(layout: tuple[CompartmentSpec, ...]) -> Mapping[str, tuple[int, CompartmentSpec]]:
    """Return ``{label: (position, spec)}`` for a layout, in layout order (one shared mapping
    per distinct layout, however many lockers have it)."""
    return {c.id: (i, c) for i, c in enumerate(layout)}


class Compartments(Mapping[str, V]):
    """One ``V`` per compartment of a layout, made by ``make(owner, position, spec)`` when
    first asked for (``make`` a plain function, such as an unbound method of ``owner``'s
    class: a bound method would cost 80 bytes per locker).

    It reads as a mapping from label to ``V`` in layout order; asking for an item (``[]``,
    ``get``, ``items()``, ``values()``) makes it if need be. :meth:`peek` and :meth:`made`
    look without making anything; ``in``, ``len`` and iterating over the labels make nothing.
    """

    __slots__ = ("_index", "_made", "_make", "_owner")

    def __init__(
        self,
        index: Mapping[str, tuple[int, CompartmentSpec]],
        make: Callable[[Any, int, CompartmentSpec], V],
        owner: object,
    ) -> None:
        self._index = index
        self._made: dict[str, V] | None = None
        """The items made so far (None until the first: most lockers never touch most of
        their compartments, and an empty dict is 80 bytes)."""
        self._make = make
        self._owner = owner

    def __getitem__(self, label: str) -> V:
        made = self._made
        item = None if made is None else made.get(label)
        if item is None:
            position, spec = self._index[label]  # KeyError for an unknown label
            if made is None:
                made = self._made = {}
            item = made[label] = self._make(self._owner, position, spec)
        return item

    def __contains__(self, label: object) -> bool:
        return label in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def peek(self, label: str) -> V | None:
        """Return the item of ``label`` if it has been made, else ``None``."""
        made = self._made
        return None if made is None else made.get(label)

    def made(self) -> list[V]:
        """Return the items made so far, in layout order."""
        made = self._made
        if made is None:
            return []
        return [made[label] for label in self._index if label in made]

    def each_made(self) -> Collection[V]:
        """Return the items made so far, in the order they were made (to be used at once:
        while nothing is made it is a shared empty tuple, not a view)."""
        made = self._made
        return () if made is None else made.values()


class Cabinet:
    """The physical locker of one :class:`LockerSpec`."""

    __slots__ = (
        "clock_skew_ms",
        "compartments",
        "power",
        "salt",
        "spec",
    )

    def __init__(self, spec: LockerSpec, now_ms: int) -> None:
        self.spec = spec
        self.salt = sum(spec.locker_id.encode())
        self.compartments: Compartments[CompartmentHardware] = Compartments(
            layout_index(spec.compartments), Cabinet._make, self
        )
        for c in spec.compartments:
            if c.temperature is TemperatureClass.CHILLED:
                self.compartments.get(c.id)  # sampled at every heartbeat: made at once
        self.power = PowerSupply(spec.battery_backup_s, changed_at=now_ms)
        self.clock_skew_ms = 0

    def _make(self, position: int, spec: CompartmentSpec) -> CompartmentHardware:
        return CompartmentHardware(spec, self.salt + position)

    def compartment(self, compartment_id: str) -> CompartmentHardware:
        """Return the compartment; raises :class:`PhysicalActionError` for an unknown label."""
        hardware = self.compartments.get(compartment_id)
        if hardware is None:
            raise PhysicalActionError(
                f"{self.spec.locker_id} has no compartment {compartment_id!r}"
            )
        return hardware

    def rssi_dbm(self, now_ms: int) -> int:
        """Return the uplink's signal strength now."""
        return max(-150, min(0, self.spec.rssi_dbm + _wobble(now_ms, self.salt, 3)))
