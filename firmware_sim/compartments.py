"""The firmware's view of its compartments: door machines, sensor supervision, door timers.

For every compartment the firmware keeps a :class:`CompartmentFirmware`: the phase of the door
machine (:mod:`firmware_sim.door`, the one table), the timer of that phase, what released the
lock (a command, a pickup code or the service key), the last good occupancy reading and the
health of its sensors. :class:`Doors` feeds sensor changes and timer expiries through the table
and carries out each transition's effect: events into the uplink, deferred command results,
notices to whoever watches the locker (the simulated people). It also runs one piece of
physics, because it shares the timers: the spring that pushes a released door ajar
:data:`~firmware_sim.door.LOCK_ACTUATION_MS` after the release, unless the door is stuck.

Sensors are supervised: a stuck door or occupancy sensor is flagged by its self-test at once
(``sensor_fault``); while it is faulty its readings are ignored, and on recovery
(``sensor_recovered``) the firmware re-reads it and reports what changed meanwhile. A
compartment whose door sensor is faulty, or which jammed, is out of service; a jammed one comes
back once a technician has opened and shut it with the service key (protocol §10).

A compartment's state is made when something first happens to it (:attr:`Doors.states` makes
it on demand): until then it is in the factory state, which is what the firmware would read
from untouched hardware at boot, and a birth reports it from one tuple shared by every locker
of the layout.

Chilled compartments are sampled at every heartbeat: ``temperature_excursion`` once a
compartment has been out of range for :data:`TEMPERATURE_DEBOUNCE_MS` without interruption,
``temperature_restored`` once it has been back in range as long (protocol §7.3.11-12).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from firmware_sim import births
from firmware_sim.cabinet import Cabinet, CompartmentHardware, Compartments, layout_index
from firmware_sim.door import LOCK_ACTUATION_MS, DoorEffect, DoorInput, DoorPhase, door_step
from firmware_sim.settings import Settings
from firmware_sim.spec import CompartmentSpec
from firmware_sim.store import NonVolatile, NvStore
from firmware_sim.uplink import Uplink
from protocol.messages import (
    CompartmentState,
    DoorCause,
    DoorClosed,
    DoorForced,
    DoorJammed,
    DoorLeftOpen,
    DoorOpened,
    DoorState,
    LockState,
    OccupancyChanged,
    OpenPurpose,
    Outcome,
    ResultStatus,
    Sensor,
    SensorFault,
    SensorRecovered,
    TemperatureExcursion,
    TemperatureReading,
    TemperatureRestored,
)

if TYPE_CHECKING:
    from firmware_sim.locker import Locker

TEMPERATURE_DEBOUNCE_MS = 5 * 60_000
"""How long a chilled compartment must stay out of (or back in) range before it is reported."""
REPORTED_STATES = 16_384
"""How many distinct compartment states (as reported in births) are kept for reuse."""


@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    """Why a lock is being released."""

    cause: DoorCause
    command_id: str | None = None
    purpose: OpenPurpose | None = None
    code_hash: str | None = None


@dataclass(frozen=True, slots=True)
class Release:
    """Notice to observers: the lock of ``compartment`` is released and the door can be opened."""

    locker_id: str
    compartment: str
    request: ReleaseRequest
    at_ms: int


@dataclass(slots=True)
class CompartmentFirmware:
    """What the firmware knows and keeps about one compartment (volatile)."""

    id: str
    hw: CompartmentHardware
    phase: DoorPhase
    occupied: bool
    deadline: int | None = None
    opened_at: int = 0
    request: ReleaseRequest | None = None
    door_sensor_ok: bool = True
    occupancy_sensor_ok: bool = True
    temperature_alarm: bool = False
    temperature_since: int | None = None
    """Since when the temperature has been on the other side of the range from the alarm."""

    def state(self, now_ms: int, in_service: bool) -> CompartmentState:
        """Return this compartment as reported in a birth (a value shared between lockers)."""
        temperature = self.hw.deci_celsius(now_ms)
        return _reported(
            self.hw.spec,
            self.phase,
            self.occupied,
            in_service,
            None if temperature is None else max(-500, min(1000, temperature)),
        )


@functools.lru_cache(maxsize=1024)
def _untouched_states(layout: tuple[CompartmentSpec, ...]) -> tuple[CompartmentState, ...]:
    """Every compartment of ``layout`` in its factory state (one shared tuple per layout)."""
    states = tuple(_reported(spec, DoorPhase.LOCKED, False, True, None) for spec in layout)
    births.share(states)  # encoded once for every birth that reports it
    return states


def _out_of_service(state: CompartmentState) -> CompartmentState:
    """An untouched compartment's state, but out of service."""
    return dataclasses.replace(state, in_service=False)


@functools.lru_cache(maxsize=REPORTED_STATES)
def _reading(compartment: str, deci_celsius: int) -> TemperatureReading:
    """A temperature as reported in telemetry (shared: the same few values recur)."""
    return TemperatureReading(compartment, deci_celsius)


@functools.lru_cache(maxsize=REPORTED_STATES)
def _reported(
    spec: CompartmentSpec,
    phase: DoorPhase,
    occupied: bool,
    in_service: bool,
    deci_celsius: int | None,
) -> CompartmentState:
    """The :class:`CompartmentState` for these readings. Births repeat the same few states
    of the same few layouts, so they are built (and validated) once and shared."""
    unlocked = phase in (DoorPhase.RELEASED, DoorPhase.OPEN)
    return CompartmentState(
        id=spec.id,
        size=spec.size,
        temperature=spec.temperature,
        door=DoorState.OPEN if phase is DoorPhase.OPEN else DoorState.CLOSED,
        lock=LockState.RELEASED if unlocked else LockState.LOCKED,
        occupied=occupied,
        in_service=in_service,
        deci_celsius=deci_celsius,
    )


class Doors:
    """Runs the door machines of one locker for one boot."""

    __slots__ = (
        "board",
        "cabinet",
        "chilled",
        "layout",
        "nv",
        "states",
        "store",
        "timed",
        "untouched",
        "uplink",
    )

    def __init__(
        self,
        cabinet: Cabinet,
        nv: NonVolatile,
        store: NvStore,
        uplink: Uplink,
        board: Locker,
    ) -> None:
        self.cabinet = cabinet
        self.nv = nv
        self.store = store
        self.uplink = uplink
        self.board = board
        """The locker this boot runs on (its settings, time, answers and observers)."""
        self.layout = layout_index(cabinet.spec.compartments)
        self.untouched = _untouched_states(cabinet.spec.compartments)
        """How a birth reports each compartment while nothing has happened to it."""
        self.states: Compartments[CompartmentFirmware] = Compartments(
            self.layout, Doors._factory_state, self
        )
        """The firmware's state of each compartment, made when first needed (see below)."""
        self.timed: dict[str, None] = {}
        """The compartments with a timer or spring under way (a dict as an ordered set)."""
        self.chilled: tuple[CompartmentFirmware, ...] = ()
        """The chilled compartments (an ambient locker's is the shared empty tuple)."""
        now = self.now()
        # A compartment whose hardware was never touched is in its factory state (door shut,
        # empty, sensors fine): what the firmware reads at boot is what _factory_state()
        # assumes, so its state is made only once something happens to it. The others are
        # read now.
        for hw in cabinet.compartments.made():
            hw.pops_at = None  # a release in progress died with the old boot: the latch holds
            state = self.states[hw.spec.id]
            state.occupied = hw.occupancy_reading()
            if hw.door_reading():
                state.phase = DoorPhase.OPEN
                state.opened_at = now
                self._set_deadline(state, now + self.settings().door_open_alarm_s * 1000)
            self.supervise(state.id)

    def now(self) -> int:
        """Monotonic time for the door timers (a clock fault does not step it)."""
        return self.board.clock.now_ms()

    def settings(self) -> Settings:
        return self.board.current_settings()

    def answer(
        self, command_id: str, status: ResultStatus, outcome: Outcome, compartment: str
    ) -> None:
        """Send the result of remote open ``command_id``."""
        self.board._answer_open(command_id, status, outcome, compartment)

    def notify(self, release: Release) -> None:
        """Tell the locker's observers that a lock was released."""
        self.board._released(release)

    def _factory_state(self, _position: int, spec: CompartmentSpec) -> CompartmentFirmware:
        """The firmware's state of a compartment as it reads untouched hardware at boot."""
        hw = self.cabinet.compartments[spec.id]
        state = CompartmentFirmware(spec.id, hw, DoorPhase.LOCKED, False)
        if hw.chilled:
            self.chilled += (state,)
        return state

    # --- queries ----------------------------------------------------------------------------

    def in_service(self, state: CompartmentFirmware) -> bool:
        return state.door_sensor_ok and state.id not in self.nv.out_of_service

    def inventory(self) -> tuple[CompartmentState, ...]:
        """Return every compartment as reported in a birth, in layout order."""
        out_of_service = self.nv.out_of_service
        if not out_of_service and not self.states.each_made():
            return self.untouched  # nothing has happened to any compartment
        now = self.now()
        peek = self.states.peek
        return tuple(
            (untouched if cid not in out_of_service else _out_of_service(untouched))
            if (state := peek(cid)) is None
            else state.state(now, self.in_service(state))
            for cid, untouched in zip(self.layout, self.untouched, strict=True)
        )

    def doors_open(self) -> int:
        return sum(1 for s in self.states.each_made() if s.phase is DoorPhase.OPEN)

    def temperatures(self, now_ms: int) -> tuple[TemperatureReading, ...]:
        """Return the temperature of every chilled compartment, as reported in telemetry."""
        return tuple(
            _reading(s.id, max(-500, min(1000, s.hw.deci_celsius(now_ms) or 0)))
            for s in self.chilled
        )

    def next_deadline(self) -> int | None:
        best: int | None = None
        for cid in self.timed:
            state = self.states[cid]
            for due in (state.deadline, state.hw.pops_at):
                if due is not None and (best is None or due < best):
                    best = due
        return best

    # --- the table --------------------------------------------------------------------------

    def _set_deadline(self, state: CompartmentFirmware, deadline: int | None) -> None:
        state.deadline = deadline
        if deadline is None and state.hw.pops_at is None:
            self.timed.pop(state.id, None)
        else:
            self.timed[state.id] = None

    def step(
        self, state: CompartmentFirmware, given: DoorInput, request: ReleaseRequest | None = None
    ) -> DoorEffect:
        """Feed ``given`` through the door table and carry out the effect; return the effect.

        Raises :class:`~firmware_sim.door.IllegalDoorTransition` for a pair not in the table.
        """
        transition = door_step(state.id, state.phase, given)
        state.phase = transition.target
        effect = transition.effect
        now = self.now()
        cid = state.id
        if effect is DoorEffect.PULSE_LOCK:
            state.request = request
            if not state.hw.door_stuck:
                state.hw.pops_at = now + LOCK_ACTUATION_MS  # the spring does the rest
            self._set_deadline(state, now + self.settings().lock_release_s * 1000)
            if request is not None:
                self.notify(Release(self.cabinet.spec.locker_id, cid, request, now))
        elif effect is DoorEffect.ALREADY_OPEN:
            if request is not None and request.command_id:
                self.answer(request.command_id, ResultStatus.OK, Outcome.ALREADY_OPEN, cid)
        elif effect is DoorEffect.OPENED:
            req = state.request or ReleaseRequest(DoorCause.SERVICE)
            state.hw.pops_at = None
            self.uplink.event(DoorOpened(cid, req.cause, req.command_id, req.code_hash))
            if req.command_id:
                self.answer(req.command_id, ResultStatus.OK, Outcome.OPENED, cid)
            self._opened(state, now)
        elif effect is DoorEffect.JAMMED:
            jammed = state.request
            state.request = None
            state.hw.pops_at = None
            self._set_deadline(state, None)
            self.nv.out_of_service |= {cid}
            self.store.commit(self.nv)
            self.uplink.event(DoorJammed(cid, jammed.command_id if jammed else None))
            if jammed is not None and jammed.command_id:
                self.answer(jammed.command_id, ResultStatus.FAILED, Outcome.DOOR_JAMMED, cid)
        elif effect is DoorEffect.FORCED:
            state.request = None
            self.uplink.event(DoorForced(cid))
            self._opened(state, now)
        elif effect is DoorEffect.CLOSED:
            serviced = state.request is not None and state.request.cause is DoorCause.SERVICE
            state.request = None
            self._set_deadline(state, None)
            if state.occupancy_sensor_ok:
                state.occupied = state.hw.occupancy_reading()
            self.uplink.event(DoorClosed(cid, state.occupied, max(0, now - state.opened_at)))
            if serviced and cid in self.nv.out_of_service and state.door_sensor_ok:
                self.nv.out_of_service -= {cid}
                self.store.commit(self.nv)
        return effect

    def _opened(self, state: CompartmentFirmware, now: int) -> None:
        state.opened_at = now
        self._set_deadline(state, now + self.settings().door_open_alarm_s * 1000)

    # --- inputs -----------------------------------------------------------------------------

    def release(self, cid: str, request: ReleaseRequest) -> DoorEffect:
        """Release the lock of ``cid`` (the caller checked it is not released already)."""
        return self.step(self.states[cid], DoorInput.RELEASE, request)

    def sense_door(self, cid: str) -> None:
        """React to the door sensor of ``cid`` (after a person or a fault changed something)."""
        state = self.states[cid]
        if not state.door_sensor_ok:
            return
        reading = state.hw.door_reading()
        if reading != (state.phase is DoorPhase.OPEN):
            self.step(state, DoorInput.DOOR_OPENED if reading else DoorInput.DOOR_CLOSED)

    def supervise(self, cid: str) -> None:
        """Run the sensors' self-test of ``cid``: report faults and recoveries."""
        state = self.states[cid]
        hw = state.hw
        door_stuck = hw.door_sensor_stuck is not None
        if door_stuck == state.door_sensor_ok:
            state.door_sensor_ok = not door_stuck
            if door_stuck:
                reading = "open" if hw.door_sensor_stuck else "closed"
                self.uplink.event(SensorFault(cid, Sensor.DOOR, f"door sensor stuck at {reading}"))
            else:
                self.uplink.event(SensorRecovered(cid, Sensor.DOOR))
                self.sense_door(cid)
        occupancy_stuck = hw.occupancy_sensor_stuck is not None
        if occupancy_stuck == state.occupancy_sensor_ok:
            state.occupancy_sensor_ok = not occupancy_stuck
            if occupancy_stuck:
                reading = "occupied" if hw.occupancy_sensor_stuck else "empty"
                self.uplink.event(
                    SensorFault(cid, Sensor.OCCUPANCY, f"occupancy sensor stuck at {reading}")
                )
            else:
                self.uplink.event(SensorRecovered(cid, Sensor.OCCUPANCY))
                now_occupied = hw.occupancy_reading()
                if state.phase is not DoorPhase.OPEN and now_occupied != state.occupied:
                    state.occupied = now_occupied
                    self.uplink.event(OccupancyChanged(cid, now_occupied))

    # --- time -------------------------------------------------------------------------------

    def run_timers(self, now: int) -> None:
        """Act on every door timer (and spring) that has expired by ``now``."""
        for cid in sorted(self.timed):
            state = self.states[cid]
            hw = state.hw
            if hw.pops_at is not None and hw.pops_at <= now:
                hw.pops_at = None
                if not hw.door_open and not hw.door_stuck:
                    hw.door_open = True  # physics: the spring pushes the door ajar
                    self.sense_door(cid)
            if state.deadline is not None and state.deadline <= now:
                if state.phase is DoorPhase.RELEASED:
                    self.step(state, DoorInput.RELEASE_EXPIRED)
                elif state.phase is DoorPhase.OPEN:
                    self.uplink.event(DoorLeftOpen(state.id, now - state.opened_at))
                    period = self.settings().door_open_alarm_s * 1000
                    self._set_deadline(state, state.deadline + period)
                else:
                    self._set_deadline(state, None)
            if state.deadline is None and hw.pops_at is None:
                self.timed.pop(cid, None)

    def sample_temperatures(self, now: int) -> None:
        """Compare chilled compartments with the configured range; report excursions that
        lasted :data:`TEMPERATURE_DEBOUNCE_MS`, and restorations that lasted as long."""
        settings = self.settings()
        low, high = settings.chilled_min_deci_celsius, settings.chilled_max_deci_celsius
        for state in self.chilled:
            value = state.hw.deci_celsius(now)
            if value is None:
                continue
            value = max(-500, min(1000, value))
            against_alarm = (low <= value <= high) == state.temperature_alarm
            if not against_alarm:
                state.temperature_since = None
                continue
            if state.temperature_since is None:
                state.temperature_since = now
            if now - state.temperature_since < TEMPERATURE_DEBOUNCE_MS:
                continue
            state.temperature_alarm = not state.temperature_alarm
            state.temperature_since = None
            if state.temperature_alarm:
                self.uplink.event(TemperatureExcursion(state.id, value, low, high))
            else:
                self.uplink.event(TemperatureRestored(state.id, value))
