"""Fault injection: what can go wrong at a rural locker, by probability or at scripted times.

A :class:`FaultPlan` is a list of :class:`FaultRule`: a :class:`Fault` (what, for how long, with
what parameters) and either a time (``at_ms`` after the start, on named lockers, on ``count``
lockers picked at random, or on all) or a rate (``per_hour`` per locker, as a Poisson process).
A :class:`FaultInjector` turns the plan into agenda entries; every random choice comes from one
generator seeded by the plan, so a run can be repeated exactly.

What each fault does, and what the controller gets to see of it:

============================  ================================================================
``network_drop``              the locker's link dies without a goodbye: the broker publishes its
                              last will (presence offline); it reconnects after the duration and
                              replays everything unacknowledged
``broker_outage``             every locker of the fleet loses the broker at once and cannot
                              reconnect for the duration (fleet-wide ``network_drop``)
``door_jam``                  a door sticks: the next release gives ``door_jammed`` (event and a
                              ``failed`` result) and takes the compartment out of service; after
                              the duration a technician frees it and opens and shuts it with the
                              service key (``door_opened`` cause ``service``, ``door_closed``):
                              back in service
``stuck_sensor``              a door or occupancy sensor freezes: ``sensor_fault``, then
                              ``sensor_recovered`` (and what changed meanwhile)
``power_loss``                mains fails: ``power_changed`` (battery), battery alarms at 20 %
                              and 10 %; a battery that runs out (or ``battery = false``) shuts
                              the board down (last will) and it boots with a new boot id when
                              mains returns; otherwise ``power_changed`` (mains)
``reboot``                    the firmware restarts at once (watchdog): new boot id, new birth
``clock_skew``                the board's clock runs ``skew_ms`` off (visible in every ``ts``;
                              commands may be refused as expired or not yet valid) until the
                              duration ends (0: for good)
``temperature_excursion``     a chilled compartment's cooling fails and it warms at
                              ``rise_deci_c_per_min``: ``temperature_excursion``; after the
                              duration it cools down again: ``temperature_restored``
``serial_corruption``         the serial link flips bytes in a fraction ``corruption`` of frames
                              (serial transport only; the receiver's CRC drops them)
============================  ================================================================
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from firmware_sim.agenda import Agenda
from firmware_sim.clock import Clock
from firmware_sim.locker import Locker
from protocol.messages import Sensor, TemperatureClass

TECHNICIAN_SHUTS_MS = 5_000
"""After freeing a jammed door with the service key, the technician shuts it this much later."""


class FaultKind(enum.StrEnum):
    NETWORK_DROP = "network_drop"
    BROKER_OUTAGE = "broker_outage"
    DOOR_JAM = "door_jam"
    STUCK_SENSOR = "stuck_sensor"
    POWER_LOSS = "power_loss"
    REBOOT = "reboot"
    CLOCK_SKEW = "clock_skew"
    TEMPERATURE_EXCURSION = "temperature_excursion"
    SERIAL_CORRUPTION = "serial_corruption"


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: its kind, how long it lasts and its parameters."""

    kind: FaultKind
    duration_ms: int = 60_000
    compartment: str | None = None
    """Where (door_jam, stuck_sensor, temperature_excursion); None: one picked at random."""
    sensor: Sensor = Sensor.DOOR
    skew_ms: int = 10 * 60_000
    rise_deci_c_per_min: int = 30
    battery: bool = True
    """power_loss: whether the backup battery carries the locker (if it has one)."""
    corruption: float = 0.05

    def __post_init__(self) -> None:
        if self.duration_ms < 0:
            raise ValueError(f"{self.kind}: duration must not be negative")
        if self.sensor not in (Sensor.DOOR, Sensor.OCCUPANCY):
            raise ValueError(f"{self.kind}: only door and occupancy sensors can stick")
        if not 0.0 <= self.corruption <= 1.0:
            raise ValueError(f"{self.kind}: corruption is a fraction between 0 and 1")
        if self.rise_deci_c_per_min <= 0:
            raise ValueError(f"{self.kind}: rise_deci_c_per_min must be positive")


@dataclass(frozen=True, slots=True)
class FaultRule:
    """When a fault happens: at ``at_ms`` after the start, or at random ``per_hour`` per locker.

    ``lockers`` names the lockers it applies to (None: all); a scripted rule may instead pick
    ``count`` lockers at random.
    """

    fault: Fault
    at_ms: int | None = None
    per_hour: float = 0.0
    lockers: tuple[str, ...] | None = None
    count: int | None = None

    def __post_init__(self) -> None:
        if (self.at_ms is None) == (self.per_hour <= 0):
            raise ValueError(f"{self.fault.kind}: give either a time (at) or a rate (per_hour)")
        if self.at_ms is not None and self.at_ms < 0:
            raise ValueError(f"{self.fault.kind}: the time must not be negative")
        if self.count is not None and (self.count < 1 or self.lockers is not None):
            raise ValueError(f"{self.fault.kind}: count is a positive number, without lockers")


@dataclass(frozen=True, slots=True)
class FaultPlan:
    rules: tuple[FaultRule, ...] = ()
    seed: int = 0


class FaultHooks(Protocol):
    """Faults that act on the transport rather than on one locker's hardware."""

    def broker_outage(self, duration_ms: int) -> bool:
        """Cut every locker off the broker for ``duration_ms``; False if not possible."""
        ...

    def serial_corruption(self, locker_id: str, fraction: float, duration_ms: int) -> bool:
        """Corrupt a fraction of frames on a serial link; False if there is none."""
        ...


class FaultInjector:
    """Applies a :class:`FaultPlan` to lockers through an agenda and counts what it did."""

    def __init__(
        self,
        plan: FaultPlan,
        agenda: Agenda,
        clock: Clock,
        lockers: Mapping[str, Locker],
        hooks: FaultHooks | None = None,
    ) -> None:
        self.plan = plan
        self.agenda = agenda
        self.clock = clock
        self.lockers = lockers
        self.hooks = hooks
        self.rng = random.Random(plan.seed)
        self.injected: Counter[str] = Counter()
        self.not_applicable: Counter[str] = Counter()

    def start(self) -> None:
        """Schedule every rule of the plan from now on."""
        now = self.clock.now_ms()
        for rule in self.plan.rules:
            targets = self._targets(rule)
            if rule.at_ms is not None:
                self._schedule_scripted(rule, targets, now + rule.at_ms)
            else:
                for locker_id in targets:
                    self._schedule_random(rule, locker_id, now)

    def _targets(self, rule: FaultRule) -> list[str]:
        if rule.fault.kind is FaultKind.BROKER_OUTAGE:
            return []
        known = list(self.lockers)
        if rule.lockers is not None:
            return [lid for lid in rule.lockers if lid in self.lockers]
        if rule.count is not None:
            return self.rng.sample(known, min(rule.count, len(known)))
        return known

    def _schedule_scripted(self, rule: FaultRule, targets: Sequence[str], at: int) -> None:
        fault = rule.fault
        if fault.kind is FaultKind.BROKER_OUTAGE:
            self.agenda.at(at, lambda: self._outage(fault), "broker outage")
            return
        for locker_id in targets:
            self.agenda.at(at, self._starter(locker_id, fault), f"{fault.kind} on {locker_id}")

    def _starter(self, locker_id: str, fault: Fault) -> Callable[[], None]:
        def start() -> None:
            self.inject(locker_id, fault)

        return start

    def _schedule_random(self, rule: FaultRule, locker_id: str, after: int) -> None:
        mean_gap_ms = 3_600_000 / rule.per_hour
        at = after + max(1, int(self.rng.expovariate(1 / mean_gap_ms)))

        def fire() -> None:
            if rule.fault.kind is FaultKind.BROKER_OUTAGE:
                self._outage(rule.fault)
            else:
                self.inject(locker_id, rule.fault)
            self._schedule_random(rule, locker_id, at)

        self.agenda.at(at, fire, f"random {rule.fault.kind} on {locker_id}")

    def _outage(self, fault: Fault) -> None:
        if self.hooks is not None and self.hooks.broker_outage(fault.duration_ms):
            self.injected[fault.kind.value] += 1
            return
        for locker in self.lockers.values():
            locker.network_lost()
        self.agenda.at(self.clock.now_ms() + fault.duration_ms, self._outage_over, "outage over")
        self.injected[fault.kind.value] += 1

    def _outage_over(self) -> None:
        for locker in self.lockers.values():
            locker.network_restored()

    def _compartment(self, locker: Locker, fault: Fault) -> str | None:
        if fault.compartment is not None:
            return fault.compartment if fault.compartment in locker.cabinet.compartments else None
        candidates = [
            c.id
            for c in locker.spec.compartments
            if fault.kind is not FaultKind.TEMPERATURE_EXCURSION
            or c.temperature is TemperatureClass.CHILLED
        ]
        return self.rng.choice(candidates) if candidates else None

    def inject(self, locker_id: str, fault: Fault) -> bool:
        """Start ``fault`` on ``locker_id`` now and schedule its end; False if it cannot apply
        there (no such locker, no chilled compartment, no serial link)."""
        locker = self.lockers.get(locker_id)
        kind = fault.kind
        if locker is None:
            self.not_applicable[kind.value] += 1
            return False
        end = self.clock.now_ms() + fault.duration_ms
        later = self.agenda.at
        if kind is FaultKind.NETWORK_DROP:
            locker.network_lost()
            later(end, locker.network_restored, f"network back at {locker_id}")
        elif kind is FaultKind.BROKER_OUTAGE:
            self._outage(fault)
            return True
        elif kind is FaultKind.POWER_LOSS:
            locker.lose_mains(battery=fault.battery)
            later(end, locker.restore_mains, f"mains back at {locker_id}")
        elif kind is FaultKind.REBOOT:
            locker.reboot()
        elif kind is FaultKind.CLOCK_SKEW:
            locker.set_clock_skew(fault.skew_ms)
            if fault.duration_ms:
                later(end, lambda: locker.set_clock_skew(0), f"clock resynced at {locker_id}")
        elif kind is FaultKind.SERIAL_CORRUPTION:
            hooks = self.hooks
            if hooks is None or not hooks.serial_corruption(
                locker_id, fault.corruption, fault.duration_ms
            ):
                self.not_applicable[kind.value] += 1
                return False
        else:
            cid = self._compartment(locker, fault)
            if cid is None:
                self.not_applicable[kind.value] += 1
                return False
            if kind is FaultKind.DOOR_JAM:
                locker.jam_door(cid)
                later(end, lambda: locker.clear_jam(cid), f"technician frees {locker_id}/{cid}")
                shut = end + TECHNICIAN_SHUTS_MS
                later(shut, lambda: locker.close_door(cid), f"technician shuts {locker_id}/{cid}")
            elif kind is FaultKind.STUCK_SENSOR:
                sensor = fault.sensor
                locker.stick_sensor(cid, sensor)
                later(end, lambda: locker.stick_sensor(cid, sensor, False), "sensor recovers")
            else:
                locker.fail_cooling(cid, fault.rise_deci_c_per_min)
                later(end, lambda: locker.restore_cooling(cid), "cooling restored")
        self.injected[kind.value] += 1
        return True
