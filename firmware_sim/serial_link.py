"""One locker on a serial line (bench link), and the host side of that line.

The serial link carries the same JSON messages as MQTT, each in a :mod:`protocol.framing`
frame (COBS, CRC-32, zero delimiters). There are no topics: the receiver tells messages apart
by their ``type``. There is no broker either, so no last will; the link counts as up while the
port is open. The host (the controller's bench tool, or a test) starts a session by sending a
``controller_presence`` with state ``online``: the locker answers as on a fresh MQTT connection
(presence online, birth, replay of everything unacknowledged). Telemetry flows as on MQTT;
births, events and results are acknowledged with signed ``ack`` frames.

* :class:`SerialLocker` runs one :class:`~firmware_sim.locker.Locker` on a port (a device path
  opened with pyserial: a USB adapter on the bench, a pseudo-terminal in tests), on a
  :class:`~firmware_sim.netloop.NetLoop` thread, with a JSON file as its non-volatile memory.
  Its ``serial_corruption`` fault flips bytes in a fraction of the frames in both directions.
* :class:`SerialHost` is the other end: open a port, send frames, read decoded messages.
* :class:`PtyPair` makes a pseudo-terminal pair for tests: the locker opens ``pair.path``, the
  host uses ``pair.host_port()``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import select
import time
import tty
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from typing import Protocol, TypeVar

import serial

from firmware_sim.agenda import Agenda
from firmware_sim.clock import Clock, SystemClock
from firmware_sim.faults import Fault, FaultInjector, FaultPlan
from firmware_sim.locker import Locker
from firmware_sim.netloop import NetLoop
from firmware_sim.outbox import OutboxLimits
from firmware_sim.people import AttendantPolicy, People
from firmware_sim.settings import Settings
from firmware_sim.spec import LockerSpec
from firmware_sim.store import NvStore
from firmware_sim.views import LockerView
from protocol.codec import decode_device_message, encode, parse_json
from protocol.errors import ProtocolError
from protocol.framing import FrameDecoder, encode_frame
from protocol.messages import ControllerPresence, DeviceMessage, Message, PresenceState
from protocol.topics import CHANNEL_OF_TYPE, Channel

T = TypeVar("T")
DEFAULT_BAUDRATE = 115_200
READ_CHUNK = 4096


class SerialPortError(OSError):
    """A serial port could not be opened or used (missing, busy, not a serial device)."""


class BytePort(Protocol):
    """What the link needs of a port: a non-blocking file descriptor."""

    def fileno(self) -> int: ...

    def close(self) -> None: ...


def open_port(path: str, baudrate: int = DEFAULT_BAUDRATE) -> serial.Serial:
    """Open the serial device ``path`` exclusively, 8N1, non-blocking.

    Raises :class:`SerialPortError` with a message fit to show a user.
    """
    try:
        port = serial.Serial(path, baudrate=baudrate, timeout=0, exclusive=True)
    except serial.SerialException as exc:
        code = exc.errno
        if code in (errno.EAGAIN, errno.EBUSY, errno.EWOULDBLOCK):
            raise SerialPortError(f"serial port {path} is busy (another program has it)") from None
        if code == errno.ENOENT:
            raise SerialPortError(f"serial port {path} does not exist") from None
        if code == errno.EACCES:
            raise SerialPortError(f"no permission to open serial port {path}") from None
        raise SerialPortError(f"cannot open serial port {path}: {exc}") from None
    except (OSError, ValueError) as exc:
        raise SerialPortError(f"cannot open serial port {path}: {exc}") from None
    return port


class _Endpoint:
    """The locker's end of the line, watched by the loop (``loop_read``/``loop_write``)."""

    def __init__(self, owner: SerialLocker) -> None:
        self.owner = owner

    def loop_read(self) -> None:
        self.owner._read()

    def loop_write(self) -> None:
        self.owner._write()


class SerialLocker:
    """One simulated locker speaking framed messages on a serial port."""

    def __init__(
        self,
        spec: LockerSpec,
        port: str | BytePort,
        store: NvStore,
        *,
        settings: Settings | None = None,
        clock: Clock | None = None,
        baudrate: int = DEFAULT_BAUDRATE,
        attendant: AttendantPolicy | None = None,
        faults: FaultPlan | None = None,
        limits: OutboxLimits | None = None,
        seed: int = 0,
    ) -> None:
        self.clock = clock or SystemClock()
        self.port: BytePort = open_port(port, baudrate) if isinstance(port, str) else port
        self.locker = Locker(spec, self.clock, store, settings=settings, limits=limits)
        self.loop = NetLoop(clock=self.clock, connect_workers=0, name="locker-sim-serial")
        self.agenda = Agenda()
        self.people = People(self.agenda, self.clock, seed)
        if attendant is not None:
            self.people.attend(self.locker, attendant)
        self.faults = FaultInjector(
            faults or FaultPlan(), self.agenda, self.clock, {spec.locker_id: self.locker}, self
        )
        self.decoder = FrameDecoder()
        self.counts: Counter[str] = Counter()
        self.rng = random.Random(seed)
        self._pending = bytearray()
        self._endpoint = _Endpoint(self)
        self._corrupt_fraction = 0.0
        self._corrupt_until = 0
        self._deadline: int | None = None
        self._dirty = False
        self._line_ok = True
        self.locker.on_change = self._mark

    # --- life cycle and control (thread-safe) -----------------------------------------------

    def start(self) -> SerialLocker:
        self.loop.after_each_turn(self._after_turn)
        self.loop.start()
        self.loop.call(self._begin).result()
        return self

    def _begin(self) -> None:
        self.loop.watch(self.port.fileno(), self._endpoint)
        self.locker.connected()
        self.faults.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.loop.stop(timeout)
        with contextlib.suppress(OSError):
            self.port.close()

    def __enter__(self) -> SerialLocker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, fn: Callable[[], T]) -> Future[T]:
        return self.loop.call(fn)

    def run(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        return self.loop.call(fn).result(timeout)

    def view(self) -> LockerView:
        return self.run(self.locker.view)

    def inject(self, fault: Fault) -> bool:
        return self.run(lambda: self.faults.inject(self.locker.locker_id, fault))

    # --- fault hooks ------------------------------------------------------------------------

    def broker_outage(self, duration_ms: int) -> bool:
        return False  # no broker on a serial line

    def serial_corruption(self, locker_id: str, fraction: float, duration_ms: int) -> bool:
        self._corrupt_fraction = fraction
        self._corrupt_until = self.clock.now_ms() + duration_ms
        return True

    def _corrupt(self, data: bytes) -> bytes:
        if not self._corrupt_fraction or self.clock.now_ms() >= self._corrupt_until:
            return data
        if self.rng.random() >= self._corrupt_fraction:
            return data
        spoiled = bytearray(data)
        spoiled[self.rng.randrange(len(spoiled))] ^= 1 << self.rng.randrange(8)
        self.counts["corrupted_chunks"] += 1
        return bytes(spoiled)

    # --- the loop thread --------------------------------------------------------------------

    def _mark(self) -> None:
        self._dirty = True

    def _read(self) -> None:
        try:
            data = os.read(self.port.fileno(), READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            self._line_lost(exc)
            return
        if not data:
            return
        self.counts["bytes_in"] += len(data)
        for payload in self.decoder.feed(self._corrupt(data)):
            self._frame(payload)

    def _frame(self, payload: bytes) -> None:
        self.counts["frames_in"] += 1
        try:
            kind = parse_json(payload).get("type")
        except ProtocolError:
            self.counts["malformed_in"] += 1
            return
        if kind == ControllerPresence.TYPE:
            self._session(payload)
            return
        channel = CHANNEL_OF_TYPE.get(kind) if isinstance(kind, str) else None
        if channel in (Channel.COMMAND, Channel.ACK):
            self.locker.receive(channel, payload)
        else:
            self.counts["ignored_in"] += 1

    def _session(self, payload: bytes) -> None:
        try:
            parsed = parse_json(payload)
            online = parsed.get("state") == PresenceState.ONLINE.value
        except ProtocolError:
            return
        if online:
            self.counts["sessions"] += 1
            self.locker.disconnected()
            self.locker.connected()

    def _line_lost(self, exc: OSError) -> None:
        self.counts["line_errors"] += 1
        self._line_ok = False
        self.loop.unwatch(self.port.fileno())
        self.locker.disconnected()

    def _write(self) -> None:
        if self._pending:
            try:
                written = os.write(self.port.fileno(), self._pending)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                self._line_lost(exc)
                return
            del self._pending[:written]
            self.counts["bytes_out"] += written
        self.loop.want_write(self.port.fileno(), self._endpoint, bool(self._pending))

    def _after_turn(self) -> None:
        now = self.clock.now_ms()
        self.agenda.run_due(now)
        locker = self.locker
        if self._deadline is not None and now >= self._deadline:
            self._deadline = None
            locker.tick()
        if not self._dirty:
            return
        self._dirty = False
        if self._line_ok and locker.link_wanted and not locker.is_connected:
            locker.connected()
        for out in locker.take_outgoing():
            if not self._line_ok:
                continue
            self._pending += self._corrupt(encode_frame(out.payload))
            self.counts["frames_out"] += 1
        if self._pending:
            self._write()
        deadline = locker.next_deadline_ms()
        upcoming = self.agenda.next_time()
        if upcoming is not None and (deadline is None or upcoming < deadline):
            self.loop.at(upcoming, _nothing)
        if deadline is not None and deadline != self._deadline:
            self._deadline = deadline
            self.loop.at(deadline, self._mark)


def _nothing() -> None:
    """A timer that only wakes the loop thread up."""


class FdPort:
    """A raw file descriptor as a port (the host end of a pseudo-terminal)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class PtyPair:
    """A pseudo-terminal pair in raw mode: the locker opens :attr:`path`, the host the other
    end (:meth:`host_port`). Close with :meth:`close` or use as a context manager."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)

    def host_port(self) -> FdPort:
        return FdPort(self.master)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> PtyPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialHost:
    """The controller's end of a serial line: send messages, receive decoded ones.

    Blocking and single-threaded, for a bench tool or a test. ``port`` is a device path or an
    open port (e.g. :meth:`PtyPair.host_port`).
    """

    def __init__(self, port: str | BytePort, baudrate: int = DEFAULT_BAUDRATE) -> None:
        self.port: BytePort = open_port(port, baudrate) if isinstance(port, str) else port
        self.decoder = FrameDecoder()
        self.received: list[DeviceMessage] = []
        self.undecodable = 0

    def close(self) -> None:
        self.port.close()

    def __enter__(self) -> SerialHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        """Write ``data`` to the line as it is (blocking until written)."""
        fd = self.port.fileno()
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                select.select([], [fd], [], 1.0)

    def send(self, message: Message) -> None:
        """Frame and send one message (a signed command, a signed ack, a presence)."""
        self.send_raw(encode_frame(encode(message)))

    def hello(self, instance: str = "bench") -> None:
        """Start a session: the locker answers with presence, birth and its replay."""
        self.send(ControllerPresence(instance, PresenceState.ONLINE, int(time.time() * 1000)))

    def poll(self, timeout: float) -> list[DeviceMessage]:
        """Read for up to ``timeout`` seconds (returning early once something arrived)."""
        fd = self.port.fileno()
        got: list[DeviceMessage] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, min(left, 0.05)))
            if ready:
                try:
                    data = os.read(fd, READ_CHUNK)
                except (BlockingIOError, InterruptedError):
                    data = b""
                for payload in self.decoder.feed(data):
                    try:
                        got.append(decode_device_message(payload))
                    except ProtocolError:
                        self.undecodable += 1
            elif got or left <= 0:
                break
        self.received.extend(got)
        return got

    def wait_for(
        self, predicate: Callable[[DeviceMessage], bool], timeout: float
    ) -> DeviceMessage | None:
        """Read until a message matching ``predicate`` arrives; None after ``timeout``."""
        deadline = time.monotonic() + timeout
        for message in self.received:
            if predicate(message):
                return message
        while time.monotonic() < deadline:
            for message in self.poll(deadline - time.monotonic()):
                if predicate(message):
                    return message
        return None
