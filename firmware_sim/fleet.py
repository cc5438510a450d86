"""Many simulated lockers on one MQTT broker, in one process, on one network thread.

:class:`MqttFleet` gives every locker its own paho client (client id = locker id, its own
username and password, MQTT 3.1.1, ``clean_session`` false, last will = retained ``offline``
presence at QoS 1) and drives them all from one :class:`~firmware_sim.netloop.NetLoop`. A
:class:`LockerSession` is the transport side of one locker: it connects when the locker wants
its link, subscribes to the locker's ``cmd`` and ``ack`` topics on every CONNACK and tells the
locker it is connected on the SUBACK (protocol §6), publishes what the locker has to send (with
the QoS and retain flag of each channel),
hands the locker only messages on the two topics it subscribed to (commands and acks; anything
else is counted and dropped), ticks it at its deadlines, and reconnects with jittered
exponential backoff. A locker that loses power, whose network fails, or that reboots has its TCP
connection dropped without a goodbye, so the broker publishes its last will as for a real one.

Connects are staggered: at most ``connect_window`` are outstanding (CONNECT sent, CONNACK not
yet received), started at most one per ``connect_interval_ms``, so a broker is never hit by
thousands at once (an amqtt broker crashes on simultaneous connects: use a window of 1 there).
Counters are kept on the client side (CONNACKs, publishes, PUBACKs, messages received,
reconnects, errors); the broker's own connected count is not a health signal.

Tests, the CLI and the controller's scenario runner use the thread-safe calls: :meth:`call` and
:meth:`run` execute a function on the network thread; :meth:`view`, :meth:`keypad_enter`,
:meth:`inject` ... are shortcuts.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import random
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from firmware_sim.agenda import Agenda
from firmware_sim.clock import Clock, ScaledClock, SystemClock
from firmware_sim.faults import Fault, FaultInjector, FaultPlan
from firmware_sim.locker import Locker
from firmware_sim.netloop import LoopClient, NetLoop
from firmware_sim.people import Attendant, People
from firmware_sim.session import FleetOptions, FleetStats, LinkState, LockerSession
from firmware_sim.spec import LockerSpec
from firmware_sim.store import MemoryStore
from firmware_sim.views import LockerView
from protocol.topics import Channel, TopicLayout
from protocol.urls import BrokerAddress

__all__ = ["FleetOptions", "FleetStats", "LinkState", "LockerSession", "MqttFleet"]

T = TypeVar("T")
MISC_TICK_MS = 250


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _nothing() -> None:
    """A timer that only wakes the network thread up."""


class MqttFleet:
    """A fleet of simulated lockers on one broker. Use as a context manager, or start/stop."""

    def __init__(
        self,
        specs: Iterable[LockerSpec],
        broker: BrokerAddress,
        options: FleetOptions | None = None,
        *,
        faults: FaultPlan | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.options = options or FleetOptions()
        self.broker = broker
        scale = self.options.time_scale
        self.clock = clock or (ScaledClock(scale) if scale != 1.0 else SystemClock())
        self.layout = TopicLayout(self.options.topic_root)
        workers = self.options.connect_workers
        if workers is None:
            workers = 0 if _is_loopback(broker.host) else 4
        self.loop = NetLoop(clock=self.clock, connect_workers=workers, time_scale=scale)
        self.agenda = Agenda()
        self.people = People(self.agenda, self.clock, self.options.seed)
        self.rng = random.Random(self.options.seed)
        self.counts: Counter[str] = Counter()
        self.sessions: dict[str, LockerSession] = {}
        self._dirty: set[LockerSession] = set()
        self._queue: deque[LockerSession] = deque()
        self._agenda_wake: int | None = None
        self._outstanding = 0
        self._connected = 0
        self._next_admit = 0
        self._outage_until = 0
        self._misc_order: list[LockerSession] = []
        self._misc_index = 0
        self._attendant = (
            None
            if self.options.attendant is None
            else Attendant(self.people, self.options.attendant)
        )
        # Each access to self._on_connect makes a new bound method (80 bytes): made once and
        # shared by every client instead of five per client.
        self._callbacks = (
            self._on_connect,
            self._on_disconnect,
            self._on_message,
            self._on_publish,
            self._on_subscribe,
        )
        self._tick_fn = self._tick
        for spec in specs:
            self._add(spec)
        self.lockers = {lid: s.locker for lid, s in self.sessions.items()}
        self.faults = FaultInjector(
            faults or FaultPlan(), self.agenda, self.clock, self.lockers, hooks=self
        )
        self.started_at = 0.0
        self.all_connected_at: float | None = None
        """``time.monotonic()`` when every locker first had its CONNACK at the same time."""

    def _add(self, spec: LockerSpec) -> None:
        options = self.options
        locker = Locker(
            spec, self.clock, MemoryStore(), settings=options.settings, limits=options.limits
        )
        client = LoopClient(
            CallbackAPIVersion.VERSION2,
            client_id=spec.locker_id,
            clean_session=False,
            protocol=MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,
        )
        client.username_pw_set(spec.username, spec.password or None)
        client.max_inflight_messages_set(100)
        if self.broker.tls:
            client.tls_set()
        session = LockerSession(locker, client, self.layout, self._dirty)
        client.user_data_set(session)
        on_connect, on_disconnect, on_message, _on_publish, on_subscribe = self._callbacks
        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_message = on_message
        client.on_subscribe = on_subscribe
        # on_publish is set only while a QoS 1 publish awaits its PUBACK (see _pump): paho
        # calls it for every QoS 0 publish written too, with a new ReasonCode and Properties
        # each time, which was a tenth of the CPU of a fleet sending only heartbeats.
        self.loop.attach(client)
        client.connect_async(self.broker.host, self.broker.port, options.keepalive_s)
        locker.on_change = session  # marks it for the next pump
        if self._attendant is not None:
            locker.observers.append(self._attendant)  # one for all: it keeps no state
        self.sessions[spec.locker_id] = session
        self._misc_order.append(session)

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> MqttFleet:
        """Start the network thread, queue every locker for connecting, start the faults."""
        self.started_at = time.monotonic()
        self.loop.after_each_turn(self._after_turn)
        self.loop.start()
        self.loop.call(self._begin).result()
        return self

    def _begin(self) -> None:
        for session in self.sessions.values():
            self._dirty.add(session)
        self.faults.start()
        self.loop.at(self.clock.now_ms() + self._real(MISC_TICK_MS), self._misc_tick)

    def _real(self, ms: int) -> int:
        """Clock milliseconds that last ``ms`` real milliseconds (transport timing stays real
        under a time scale: keep-alive, connect pacing, backoff)."""
        return int(ms * self.options.time_scale)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop: every connection is dropped as a dead locker's would be (last wills fire)."""
        self.loop.stop(timeout)

    def __enter__(self) -> MqttFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- thread-safe control ----------------------------------------------------------------

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on the network thread; the place to touch lockers from other threads."""
        return self.loop.call(fn)

    def run(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn`` on the network thread and return its result."""
        return self.loop.call(fn).result(timeout)

    def view(self, locker_id: str) -> LockerView:
        """A snapshot of one locker."""
        return self.run(lambda: self.lockers[locker_id].view())

    def keypad_enter(self, locker_id: str, code: str) -> None:
        self.run(lambda: self.lockers[locker_id].keypad_enter(code))

    def act(self, locker_id: str, action: Callable[[Locker], object]) -> None:
        """Do something to one locker on the network thread (open a door, ...)."""
        self.run(lambda: action(self.lockers[locker_id]))

    def inject(self, locker_id: str, fault: Fault) -> bool:
        """Start a fault on one locker now; False if it does not apply there."""
        return self.run(lambda: self.faults.inject(locker_id, fault))

    def stats(self) -> FleetStats:
        return self.run(self._stats)

    def wait_until(
        self, predicate: Callable[[MqttFleet], bool], timeout: float, poll: float = 0.05
    ) -> bool:
        """Poll ``predicate(fleet)`` on the network thread until true; False after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if self.run(lambda: predicate(self)):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)

    def wait_connected(self, timeout: float, count: int | None = None) -> bool:
        """Wait until ``count`` lockers (default all) are connected."""
        want = len(self.sessions) if count is None else count
        return self.wait_until(lambda f: f.connected_count() >= want, timeout)

    # --- fault hooks (network thread) -------------------------------------------------------

    def broker_outage(self, duration_ms: int) -> bool:
        """Cut every locker off the broker for ``duration_ms``: links dropped, no reconnects."""
        self._outage_until = self.clock.now_ms() + duration_ms
        for session in self.sessions.values():
            if session.state in (LinkState.CONNECTED, LinkState.HANDSHAKE):
                self._drop(session)
        return True

    def serial_corruption(self, locker_id: str, fraction: float, duration_ms: int) -> bool:
        return False  # an MQTT fleet has no serial link

    # --- counters ---------------------------------------------------------------------------

    def connected_count(self) -> int:
        """How many lockers are connected now (by CONNACKs minus disconnections)."""
        return self._connected

    def _stats(self) -> FleetStats:
        c = self.counts
        errors = c["connect_failures"] + c["connack_refused"] + c["connack_timeouts"]
        errors += c["publish_errors"] + c["subscribe_refused"]
        errors += self.loop.errors + len(self.agenda.failures)
        return FleetStats(
            lockers=len(self.sessions),
            connected=self.connected_count(),
            ever_connected=sum(1 for s in self.sessions.values() if s.connected_once),
            connacks=c["connacks"],
            connack_refused=c["connack_refused"],
            publishes=c["publishes"],
            pubacks=c["pubacks"],
            received=c["received"],
            foreign_dropped=c["foreign_dropped"],
            reconnects=c["reconnects"],
            connect_failures=c["connect_failures"],
            disconnects=c["disconnects"],
            errors=errors,
            faults=dict(self.faults.injected),
            faults_not_applicable=dict(self.faults.not_applicable),
            last_error=self.loop.last_error or (self.agenda.failures[-1:] or [""])[0],
        )

    def locker_counters(self) -> Counter[str]:
        """The sum of every locker's counters (events by kind, results, refusals, ...)."""
        total: Counter[str] = Counter()
        for locker in self.lockers.values():
            total.update(locker.counters)
        return total

    # --- the network thread -----------------------------------------------------------------

    def _after_turn(self) -> None:
        now = self.clock.now_ms()
        agenda = self.agenda
        if agenda.next_time() is not None:
            agenda.run_due(now)
            upcoming = agenda.next_time()
            if upcoming is not None and upcoming != self._agenda_wake:
                self._agenda_wake = upcoming
                self.loop.at(upcoming, _nothing)
        dirty = self._dirty
        while dirty:
            batch = list(dirty)  # pumping may mark sessions again: they wait for the next batch
            dirty.clear()
            for session in batch:
                self._pump(session, now)
        self._admit(now)

    def _pump(self, session: LockerSession, now: int) -> None:
        locker = session.locker
        state = session.state
        if state is LinkState.CONNECTED:
            client = session.client
            published = False
            for out in locker.take_outgoing():
                info = client.publish(session.topic(out.channel), out.payload, out.qos, out.retain)
                published = True
                self.counts["publishes"] += 1
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    self.counts["publish_errors"] += 1
                elif out.qos:
                    if session.pending_mids is None:
                        session.pending_mids = set()
                        client.on_publish = self._callbacks[3]
                    session.pending_mids.add(info.mid)
            if not locker.link_wanted or locker.boot_id != session.link_boot:
                if published:  # a goodbye first (written at the end of this turn), then drop
                    attempt = session.attempt
                    self.loop.at(now, lambda: self._drop_if_still(session, attempt))
                else:
                    self._drop(session)
        elif state is LinkState.IDLE and locker.link_wanted:
            self._enqueue(session)
        deadline = locker.next_deadline_ms()
        if deadline is not None and deadline != session.deadline:
            session.deadline = deadline
            self.loop.at(deadline, functools.partial(self._tick_fn, session, deadline))
        elif deadline is None:
            session.deadline = None

    def _tick(self, session: LockerSession, deadline: int) -> None:
        if session.deadline == deadline:
            session.deadline = None
            session.locker.tick()
            self._dirty.add(session)

    def _enqueue(self, session: LockerSession) -> None:
        session.state = LinkState.QUEUED
        self._queue.append(session)

    def _admit(self, now: int) -> None:
        options = self.options
        queue = self._queue
        if not queue or now < self._outage_until:
            return
        while queue and self._outstanding < options.connect_window and now >= self._next_admit:
            session = queue.popleft()
            if session.state is not LinkState.QUEUED:
                continue
            if not session.locker.link_wanted:
                session.state = LinkState.IDLE
                continue
            self._start_connect(session)
            if options.connect_interval_ms:
                self._next_admit = now + self._real(options.connect_interval_ms)
                self.loop.at(self._next_admit, _nothing)
                break

    def _start_connect(self, session: LockerSession) -> None:
        locker = session.locker
        will = locker.last_will()
        client = session.client
        client.will_set(session.topic(will.channel), will.payload, will.qos, will.retain)
        session.state = LinkState.CONNECTING
        session.attempt += 1
        attempt = session.attempt
        self._outstanding += 1
        if session.connected_once:
            self.counts["reconnects"] += 1
        self.loop.connect(client, lambda exc: self._tcp_done(session, attempt, exc))

    def _tcp_done(self, session: LockerSession, attempt: int, exc: BaseException | None) -> None:
        if attempt != session.attempt or session.state is not LinkState.CONNECTING:
            return
        if exc is not None:
            self.counts["connect_failures"] += 1
            self.counts[f"connect_failure_{type(exc).__name__}"] += 1
            self._outstanding -= 1
            self._backoff(session)
            return
        session.state = LinkState.HANDSHAKE
        timeout_at = self.clock.now_ms() + self._real(self.options.connack_timeout_ms)
        self.loop.at(timeout_at, lambda: self._connack_timeout(session, attempt))

    def _connack_timeout(self, session: LockerSession, attempt: int) -> None:
        if attempt == session.attempt and session.state is LinkState.HANDSHAKE:
            self.counts["connack_timeouts"] += 1
            self._drop(session)

    def _backoff(self, session: LockerSession) -> None:
        options = self.options
        session.failures += 1
        ceiling = min(
            options.reconnect_max_ms, options.reconnect_min_ms << min(session.failures, 16)
        )
        delay = self._real(int(ceiling * self.rng.uniform(0.5, 1.0)))
        at = max(self.clock.now_ms() + delay, self._outage_until + delay // 4)
        session.state = LinkState.BACKOFF
        attempt = session.attempt

        def retry() -> None:
            if session.state is LinkState.BACKOFF and session.attempt == attempt:
                session.state = LinkState.IDLE
                self._dirty.add(session)

        self.loop.at(at, retry)

    def _drop(self, session: LockerSession) -> None:
        """Drop the TCP connection without DISCONNECT (the broker publishes the last will)."""
        sock = session.client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
            session.client.loop_read()

    def _drop_if_still(self, session: LockerSession, attempt: int) -> None:
        if session.attempt == attempt and session.state is LinkState.CONNECTED:
            self._drop(session)

    def _misc_tick(self) -> None:
        order = self._misc_order
        if order:
            share = max(1, len(order) * MISC_TICK_MS // self.options.misc_period_ms)
            for _ in range(min(share, len(order))):
                self._misc_index = (self._misc_index + 1) % len(order)
                session = order[self._misc_index]
                if session.state is LinkState.CONNECTED:
                    session.client.loop_misc()
        self.loop.at(self.clock.now_ms() + self._real(MISC_TICK_MS), self._misc_tick)

    # --- paho callbacks (network thread) ----------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, session: LockerSession, flags: Any, reason: Any, _props: Any
    ) -> None:
        if session.state is not LinkState.HANDSHAKE:
            return
        self._outstanding -= 1
        if reason.is_failure:
            self.counts["connack_refused"] += 1
            self.counts[f"connack_refused_{reason}"] += 1
            session.state = LinkState.BACKOFF  # on_disconnect follows and schedules the retry
            return
        self.counts["connacks"] += 1
        self._connected += 1
        if self.all_connected_at is None and self._connected == len(self.sessions):
            self.all_connected_at = time.monotonic()
        session.state = LinkState.CONNECTED
        session.connected_once = True
        session.failures = 0
        session.link_boot = session.locker.boot_id
        # Subscribe even when the session was resumed, and go online on the SUBACK (§6).
        _rc, session.subscription = client.subscribe(
            [(session.topic(Channel.COMMAND), 1), (session.topic(Channel.ACK), 1)]
        )

    def _on_subscribe(
        self, client: mqtt.Client, session: LockerSession, mid: int, codes: Any, _p: Any
    ) -> None:
        if mid != session.subscription or session.state is not LinkState.CONNECTED:
            return
        if any(code.is_failure for code in codes):
            self.counts["subscribe_refused"] += 1
        session.locker.connected()

    def _on_disconnect(
        self, client: mqtt.Client, session: LockerSession, _flags: Any, _reason: Any, _p: Any
    ) -> None:
        client.drop_out_messages()  # the locker's own buffer replays what matters
        session.pending_mids = None
        client.on_publish = None
        previous = session.state
        if previous is LinkState.HANDSHAKE:
            self._outstanding -= 1
        if previous is LinkState.CONNECTED:
            self.counts["disconnects"] += 1
            self._connected -= 1
            session.failures = 0
        if previous in (LinkState.CONNECTED, LinkState.HANDSHAKE, LinkState.BACKOFF):
            session.locker.disconnected()
            self._backoff(session)

    def _on_message(self, client: mqtt.Client, session: LockerSession, msg: Any) -> None:
        channel = session.channel_of(msg.topic)
        if channel is None:
            self.counts["foreign_dropped"] += 1
            return
        self.counts["received"] += 1
        session.locker.receive(channel, msg.payload)

    def _on_publish(
        self, client: mqtt.Client, session: LockerSession, mid: int, _reason: Any, _p: Any
    ) -> None:
        pending = session.pending_mids
        if pending is not None and mid in pending:
            pending.discard(mid)
            if not pending:
                session.pending_mids = None
                client.on_publish = None  # until the next QoS 1 publish
            self.counts["pubacks"] += 1
