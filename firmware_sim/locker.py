"""One locker's firmware, sans I/O: method calls in, messages to send out.

A :class:`Locker` is what runs on one locker's board, together with the physical locker it sits
in (:class:`~firmware_sim.cabinet.Cabinet`). It never touches a socket, a file or the system
time. Inputs are method calls: the link coming and going (:meth:`Locker.connected`,
:meth:`Locker.disconnected`), bytes received on a channel (:meth:`Locker.receive`), people at
the locker (:meth:`Locker.keypad_enter`, :meth:`Locker.open_door`, :meth:`Locker.put_item`, ...),
faults acting on the hardware, and :meth:`Locker.tick` whenever :meth:`Locker.next_deadline_ms`
says time has come. Outputs are drained with :meth:`Locker.take_outgoing`; the retained
``offline`` presence for the broker's last will comes from :meth:`Locker.last_will`, and
:attr:`Locker.link_wanted` says whether the board wants its uplink (not while powered off or
while its modem is down).

A locker is put together from parts that live for one boot: the :class:`~firmware_sim.uplink.
Uplink` (sequence numbers, the buffer, what goes out), the :class:`~firmware_sim.compartments.
Doors` (door machines, sensors, temperatures) and the :class:`~firmware_sim.commands.
CommandDesk` (checking and executing commands); what must survive a reboot is in
:class:`~firmware_sim.store.NonVolatile`, the physical world in the cabinet. Timers run on the
injected clock; the board's real-time clock (:meth:`Locker.rtc_ms`, with the clock-skew fault)
stamps messages and judges expiry. A pickup code typed on the keypad is hashed and matched
against the code cache, online or not.

Whoever drives a locker sets :attr:`Locker.on_change` to learn that there is output, a new
deadline or a change of link wish, and may add :attr:`Locker.observers` that are told when a
lock is released (simulated people use this to open the door). Observers must not call back into
the locker synchronously; they schedule what they do.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable

from firmware_sim.cabinet import DEFAULT_RISE_DECI_C_PER_MIN, Cabinet, PhysicalActionError
from firmware_sim.clock import Clock
from firmware_sim.commands import CommandDesk
from firmware_sim.compartments import Doors, Release, ReleaseRequest
from firmware_sim.door import DoorPhase
from firmware_sim.keypad import KeypadGuard, Screen
from firmware_sim.outbox import OutboxLimits
from firmware_sim.settings import Settings
from firmware_sim.spec import LockerSpec
from firmware_sim.store import MemoryStore, NonVolatile, NvStore
from firmware_sim.uplink import Outgoing, Uplink
from firmware_sim.views import LockerView, locker_view
from protocol.codes import code_hash, is_well_formed_code
from protocol.messages import (
    Birth,
    CodeRejected,
    DoorCause,
    Outcome,
    Pickup,
    PowerChanged,
    PowerSource,
    PresenceState,
    ResultStatus,
    Sensor,
    Telemetry,
)
from protocol.topics import Channel


class Locker:
    """The firmware of one locker, and the physical locker around it."""

    __slots__ = (
        "_battery_alarm",
        "_farewell",
        "_keypad",
        "_next_heartbeat",
        "_phase_ms",
        "_reboot_at",
        "_screen",
        "booted_at",
        "cabinet",
        "clock",
        "commands",
        "counters",
        "doors",
        "factory_settings",
        "limits",
        "link_blocks",
        "locker_id",
        "nv",
        "observers",
        "on_change",
        "powered",
        "spec",
        "store",
        "uplink",
    )

    def __init__(
        self,
        spec: LockerSpec,
        clock: Clock,
        store: NvStore | None = None,
        *,
        settings: Settings | None = None,
        limits: OutboxLimits | None = None,
        power_on: bool = True,
    ) -> None:
        self.spec = spec
        self.locker_id = spec.locker_id
        self.clock = clock
        self.store: NvStore = store if store is not None else MemoryStore()
        self.factory_settings = settings or Settings()
        self.limits = limits or OutboxLimits()
        self.cabinet = Cabinet(spec, clock.now_ms())
        self.link_blocks = 0
        self.powered = False
        self.counters: Counter[str] = Counter()
        self.on_change: Callable[[], None] | None = None
        self.observers: list[Callable[[Locker, Release], None]] = []
        self._phase_ms = zlib.crc32(spec.locker_id.encode())
        self._farewell: list[Outgoing] | None = None
        """The offline presence published before a deliberate restart (it outlives the boot)."""
        if power_on:
            self._boot()

    # --- time and state ---------------------------------------------------------------------

    def rtc_ms(self) -> int:
        """The board's real-time clock: the injected clock plus the clock skew fault.

        It stamps messages (``ts``) and judges absolute times (a command's expiry, a pickup
        code's). Timers (heartbeat, doors, resending, keypad lockout) run on the injected clock
        itself, as firmware runs them on a tick counter, so a clock step does not upset them.
        """
        return self.clock.now_ms() + self.cabinet.clock_skew_ms

    def _now(self) -> int:
        return self.clock.now_ms()

    @property
    def settings(self) -> Settings:
        return self.nv.settings or self.factory_settings

    def current_settings(self) -> Settings:
        """The settings in force (for the parts that ask for them when they need them)."""
        return self.nv.settings or self.factory_settings

    @property
    def boot_id(self) -> int:
        return self.nv.boot_id

    @property
    def is_connected(self) -> bool:
        return self.powered and self.uplink.connected

    @property
    def link_wanted(self) -> bool:
        """Whether the board wants its uplink: powered, and nothing blocks the network."""
        return self.powered and self.link_blocks == 0

    @property
    def screen(self) -> str:
        return self._screen.current(self._now())

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _boot(self) -> None:
        nv = self.store.load() or NonVolatile()
        nv.boot_id += 1
        self.nv = nv
        self.store.commit(nv)
        self.powered = True
        self.counters["boots"] += 1
        self.uplink = Uplink(self.locker_id, nv, self.store, self.limits, self, self.counters)
        self.uplink.report_drops()  # forgets a record an earlier boot could not report
        self._screen = Screen()
        self._keypad = KeypadGuard()
        now = self._now()
        self.booted_at = self.clock.now_ms()
        self._reboot_at: int | None = None
        self._battery_alarm: tuple[int, int] | None = None
        # The parts ask this locker for the time, the settings and so on when they need them
        # (no bound method kept per part and boot).
        self.doors = Doors(self.cabinet, nv, self.store, self.uplink, self)
        self.commands = CommandDesk(
            locker_id=self.locker_id,
            command_key=self.spec.command_key,
            nv=nv,
            store=self.store,
            uplink=self.uplink,
            doors=self.doors,
            screen=self._screen,
            board=self,
            counters=self.counters,
        )
        period = self.settings.heartbeat_s * 1000
        self._next_heartbeat = now + self._phase_ms % period
        if not self.cabinet.power.mains:
            self._schedule_battery_alarm(now)

    # --- the link ---------------------------------------------------------------------------

    def connected(self) -> None:
        """The transport's link is up (MQTT CONNACK, or the serial host is there)."""
        if not self.link_wanted or self.uplink.connected:
            return
        self.counters["connections"] += 1
        self.uplink.connect(self._birth)
        self._changed()

    def disconnected(self) -> None:
        """The transport's link is down."""
        if self.powered and self.uplink.connected:
            self.uplink.disconnect()
            self._changed()

    def last_will(self) -> Outgoing:
        """The retained offline presence to leave with the broker before connecting."""
        return self.uplink.last_will()

    def take_outgoing(self) -> list[Outgoing]:
        """Return (and forget) what the transport must send now, in order."""
        if not self.powered:
            return []
        if self._farewell:
            out, self._farewell = self._farewell, None
            return out + self.uplink.take()
        return self.uplink.take()

    def receive(self, channel: Channel, payload: bytes) -> None:
        """Take bytes received on ``channel`` (commands and acknowledgements)."""
        if not self.powered:
            return
        self.counters["received"] += 1
        if channel is Channel.COMMAND:
            self.commands.handle(payload)
        elif channel is Channel.ACK:
            self.uplink.acknowledge(payload, self.spec.command_key)
        else:
            self.counters["ignored_channel"] += 1
        self._changed()

    # --- what the firmware sends about itself ----------------------------------------------

    def _birth(self, seq: int, ts: int, pending: int) -> Birth:
        codes = self.nv.codes
        return Birth(
            locker_id=self.locker_id,
            boot_id=self.boot_id,
            seq=seq,
            ts=ts,
            firmware=self.spec.firmware,
            model=self.spec.model,
            connection=max(1, self.uplink.connection),
            code_cache_version=codes.version,
            config_version=self.settings.config_version,
            pending_events=pending,
            compartments=self.doors.inventory(),
            code_staging=codes.staging(),
        )

    def _answer_open(
        self, command_id: str, status: ResultStatus, outcome: Outcome, compartment: str
    ) -> None:
        self.commands.answer_open(command_id, status, outcome, compartment)

    def _schedule_reboot(self, at_ms: int) -> None:
        self._reboot_at = at_ms

    def _settings_changed(self, old: Settings, new: Settings) -> None:
        if new.heartbeat_s != old.heartbeat_s:
            self._next_heartbeat = min(self._next_heartbeat, self._now() + new.heartbeat_s * 1000)

    def _released(self, release: Release) -> None:
        for observer in self.observers:
            observer(self, release)

    # --- the keypad -------------------------------------------------------------------------

    def keypad_enter(self, code: str) -> None:
        """A person types ``code`` on the keypad and presses OK."""
        if not self.powered:
            return
        now = self._now()
        self.counters["codes_typed"] += 1
        wait = self._keypad.locked_out_for(now)
        if wait:
            self._screen.show(f"请稍候 Keypad locked, wait {-(-wait // 1000)} s", now)
            self._changed()
            return
        nv = self.nv
        hashed = code_hash(self.spec.code_key, self.locker_id, code)
        entry = nv.codes.match(hashed, self.rtc_ms()) if is_well_formed_code(code) else None
        state = self.doors.states.get(entry.compartment) if entry is not None else None
        if entry is not None and state is not None:
            if not self.doors.in_service(state):
                self._screen.show(f"{state.id} 暂停服务 out of service, call hotline", now)
            elif state.phase is DoorPhase.RELEASED:
                self._screen.show(f"{state.id} 请稍候 Please wait", now)
            else:
                nv.codes.consume(hashed)
                self.store.commit(nv)
                self._keypad.right()
                offline = not self.uplink.connected
                self.uplink.event(Pickup(state.id, hashed, entry.parcel_ref, offline))
                self._screen.show(f"请取件 {state.id} Please take your parcel", now)
                self.doors.release(state.id, ReleaseRequest(DoorCause.KEYPAD, code_hash=hashed))
        else:
            settings = self.settings
            wrong = self._keypad.wrong(now, settings.keypad_max_attempts, settings.keypad_lockout_s)
            self.uplink.event(CodeRejected(wrong.attempts, wrong.locked_out_ms))
            if wrong.locked_out_ms:
                text = f"取件码错误 Too many wrong codes, wait {wrong.locked_out_ms // 1000} s"
            else:
                text = f"取件码错误 Code wrong, {wrong.tries_left} tries left"
            self._screen.show(text, now)
        self._changed()

    # --- people at the doors ----------------------------------------------------------------

    def open_door(self, compartment: str) -> None:
        """A person pulls the door of ``compartment`` open: by force if the latch is engaged;
        nothing happens if it is open already (a released door pops ajar by itself).

        Raises :class:`PhysicalActionError` for an unknown compartment or a stuck door.
        """
        hw = self.cabinet.compartment(compartment)
        if hw.door_open:
            return
        if hw.door_stuck:
            raise PhysicalActionError(f"{self.locker_id}/{compartment}: the door is stuck")
        hw.door_open = True
        self._sense_door(compartment)

    def close_door(self, compartment: str) -> None:
        """A person pushes the door of ``compartment`` shut (nothing if it is shut already).

        Raises :class:`PhysicalActionError` for an unknown compartment.
        """
        hw = self.cabinet.compartment(compartment)
        if not hw.door_open:
            return
        hw.door_open = False
        self._sense_door(compartment)

    def put_item(self, compartment: str) -> None:
        """A person puts a parcel into the open ``compartment``. Raises
        :class:`PhysicalActionError` if the door is shut or a parcel is there already."""
        hw = self.cabinet.compartment(compartment)
        if not hw.door_open:
            raise PhysicalActionError(f"{self.locker_id}/{compartment}: the door is shut")
        if hw.occupied:
            raise PhysicalActionError(f"{self.locker_id}/{compartment}: already holds a parcel")
        hw.occupied = True

    def take_item(self, compartment: str) -> None:
        """A person takes the parcel out of the open ``compartment``. Raises
        :class:`PhysicalActionError` if the door is shut or the compartment is empty."""
        hw = self.cabinet.compartment(compartment)
        if not hw.door_open:
            raise PhysicalActionError(f"{self.locker_id}/{compartment}: the door is shut")
        if not hw.occupied:
            raise PhysicalActionError(f"{self.locker_id}/{compartment}: is empty")
        hw.occupied = False

    def door_unlatched(self, compartment: str) -> bool:
        """Whether a person pulling the door now would open it without force."""
        if not self.powered or self.cabinet.compartment(compartment).door_stuck:
            return False
        state = self.doors.states.get(compartment)
        return state is not None and state.phase in (DoorPhase.RELEASED, DoorPhase.OPEN)

    def service_key(self, compartment: str) -> None:
        """A technician turns the service key: the lock releases (cause ``service``) whatever
        the compartment's state; once the door has been opened and shut, a compartment out of
        service after a jam is back in service. Nothing happens to a released or open door.
        """
        self.cabinet.compartment(compartment)
        if self.powered:
            state = self.doors.states[compartment]
            if state.phase is DoorPhase.LOCKED:
                self.doors.release(compartment, ReleaseRequest(DoorCause.SERVICE))
        self._changed()

    def clear_jam(self, compartment: str) -> None:
        """A technician frees a stuck door and opens it with the service key; shutting it
        afterwards (:meth:`close_door`) returns the compartment to service."""
        self.cabinet.compartment(compartment).door_stuck = False
        self.service_key(compartment)

    def _sense_door(self, compartment: str) -> None:
        if self.powered:
            self.doors.sense_door(compartment)
        self._changed()

    # --- faults acting on the hardware ------------------------------------------------------

    def jam_door(self, compartment: str, stuck: bool = True) -> None:
        """Make the door of ``compartment`` stick (the next release jams), or free it."""
        self.cabinet.compartment(compartment).door_stuck = stuck

    def stick_sensor(self, compartment: str, sensor: Sensor, stuck: bool = True) -> None:
        """Freeze the door or occupancy sensor of ``compartment`` at its reading, or free it."""
        hw = self.cabinet.compartment(compartment)
        if sensor is Sensor.DOOR:
            hw.door_sensor_stuck = hw.door_reading() if stuck else None
        elif sensor is Sensor.OCCUPANCY:
            hw.occupancy_sensor_stuck = hw.occupancy_reading() if stuck else None
        else:
            raise ValueError(f"only door and occupancy sensors can stick, not {sensor}")
        if self.powered:
            self.doors.supervise(compartment)
        self._changed()

    def fail_cooling(
        self, compartment: str, rise_deci_c_per_min: int = DEFAULT_RISE_DECI_C_PER_MIN
    ) -> None:
        """The cooling unit of a chilled compartment stops; it warms towards ambient."""
        hw = self.cabinet.compartment(compartment)
        if not hw.chilled:
            raise ValueError(f"{self.locker_id}/{compartment} is not chilled")
        hw.fail_cooling(self._now(), rise_deci_c_per_min)

    def restore_cooling(self, compartment: str) -> None:
        self.cabinet.compartment(compartment).restore_cooling(self._now())

    def set_clock_skew(self, skew_ms: int) -> None:
        """Make the board's real-time clock run ``skew_ms`` ahead (negative: behind)."""
        self.cabinet.clock_skew_ms = skew_ms
        self._changed()

    def network_lost(self) -> None:
        """The network between the locker and the broker fails (the transport drops the link
        at once, without a goodbye, and does not reconnect until :meth:`network_restored`).

        Losses nest: two overlapping faults need two restorations.
        """
        self.link_blocks += 1
        self.disconnected()
        self._changed()

    def network_restored(self) -> None:
        self.link_blocks = max(0, self.link_blocks - 1)
        self._changed()

    def lose_mains(self, battery: bool = True) -> None:
        """Mains power fails; the battery takes over if it can (and ``battery`` says it works)."""
        power = self.cabinet.power
        if not power.mains:
            return
        now = self._now()
        power.switch(False, now)
        if self.powered:
            if not battery or power.battery_pct(now) == 0:
                self.power_off()
                return
            self.uplink.event(PowerChanged(PowerSource.BATTERY, power.battery_pct(now)))
            self._schedule_battery_alarm(now)
        self._changed()

    def restore_mains(self) -> None:
        """Mains power returns; a locker that had shut down boots."""
        power = self.cabinet.power
        if power.mains:
            return
        now = self._now()
        power.switch(True, now)
        self._battery_alarm = None
        if self.powered:
            self.uplink.event(PowerChanged(PowerSource.MAINS, power.battery_pct(now)))
            self._changed()
        else:
            self.power_on()

    def _schedule_battery_alarm(self, now: int) -> None:
        pct = self.cabinet.power.battery_pct(now)
        self._battery_alarm = None
        for level in (20, 10, 0):
            if level < pct:
                at = self.cabinet.power.time_at_level(level)
                if at is not None:
                    self._battery_alarm = (max(at, now), level)
                    return

    def power_off(self) -> None:
        """The board loses power: volatile state is gone, the link dies without a goodbye."""
        if not self.powered:
            return
        self.uplink.disconnect()
        self.powered = False
        self.counters["power_offs"] += 1
        self._changed()

    def power_on(self) -> None:
        """The board gets power again and boots (a new boot id)."""
        if self.powered:
            return
        self._boot()
        self._changed()

    def reboot(self) -> None:
        """Restart the firmware now (watchdog, or a reboot command): a new boot id."""
        if not self.powered:
            return
        self.uplink.disconnect()
        self._boot()
        self._changed()

    # --- time -------------------------------------------------------------------------------

    def next_deadline_ms(self) -> int | None:
        """Return when (by the injected clock) :meth:`tick` must next be called; None: never."""
        if not self.powered:
            return None
        best = self._next_heartbeat
        for candidate in (
            self.doors.next_deadline(),
            self.uplink.next_deadline(),
            self._reboot_at,
            self._battery_alarm[0] if self._battery_alarm else None,
        ):
            if candidate is not None and candidate < best:
                best = candidate
        return best

    def tick(self) -> None:
        """Do whatever is due: door timers, retransmissions, battery alarms, heartbeat."""
        if not self.powered:
            return
        now = self._now()
        if self._reboot_at is not None and now >= self._reboot_at:
            if self.uplink.connected:  # a deliberate restart says goodbye (protocol §6)
                offline = self.uplink.presence(PresenceState.OFFLINE, self.uplink.connection)
                self._farewell = [*(self._farewell or ()), offline]
            self.reboot()
            return
        self.doors.run_timers(now)
        if self._battery_alarm is not None and now >= self._battery_alarm[0]:
            level = self._battery_alarm[1]
            if level == 0:
                self.power_off()
                return
            self.uplink.event(PowerChanged(PowerSource.BATTERY, level))
            self._schedule_battery_alarm(now + 1)
        if now >= self._next_heartbeat:
            self._heartbeat(now)
            period = self.settings.heartbeat_s * 1000
            self._next_heartbeat += period
            if self._next_heartbeat <= now:
                self._next_heartbeat = now + period
        self.uplink.flush()
        self._changed()

    def _heartbeat(self, now: int) -> None:
        self.doors.sample_temperatures(now)
        if not self.uplink.connected:
            return
        power = self.cabinet.power
        temperatures = self.doors.temperatures(now)
        self.uplink.telemetry(
            Telemetry(
                locker_id=self.locker_id,
                boot_id=self.boot_id,
                seq=self.uplink.seq,
                ts=self.rtc_ms(),
                uptime_s=max(0, self.clock.now_ms() - self.booted_at) // 1000,
                power=power.source,
                battery_pct=power.battery_pct(now),
                rssi_dbm=self.cabinet.rssi_dbm(now),
                doors_open=self.doors.doors_open(),
                pending_events=len(self.uplink.outbox),
                events_dropped_total=self.nv.events_dropped_total,
                temperatures=temperatures,
            )
        )
        self.counters["telemetry"] += 1

    # --- reading the state ------------------------------------------------------------------

    def view(self) -> LockerView:
        """Return a frozen snapshot of the locker (safe to hand to another thread)."""
        return locker_view(self)
