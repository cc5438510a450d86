"""The locker's side of the conversation: sequence numbers, the buffer, what goes out and when.

One :class:`Uplink` per boot. It numbers births, events and results (1, 2, 3, ... per boot),
keeps them in the :class:`~firmware_sim.outbox.Outbox` until a *signed* acknowledgement names
them, and queues :class:`Outgoing` messages for the transport while connected: on connect the
retained ``online`` presence, then the birth, then the replay of everything unacknowledged in
sequence order. Telemetry and presence carry the last sequence number taken (the high-water mark)
and are never buffered.

Overflow (protocol §5.7): when the buffer is full, the oldest buffered message of the current
boot is discarded to make room (of an earlier boot only if the current one has none left). The
discarded numbers of the current boot are recorded in non-volatile memory and reported with an
``events_dropped`` event (count and range) as soon as an acknowledgement makes room; every
discarded message counts in telemetry's ``events_dropped_total``. Nothing here encodes
anything by hand: every payload comes from :func:`protocol.codec.encode` of a validated
message.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from firmware_sim.births import encode_birth
from firmware_sim.outbox import Outbox, OutboxLimits
from firmware_sim.store import Buffered, DropRecord, NonVolatile, NvStore
from protocol.auth import check_ack
from protocol.codec import encode
from protocol.messages import (
    Birth,
    CommandResult,
    Event,
    EventData,
    EventsDropped,
    Presence,
    PresenceState,
    Telemetry,
)
from protocol.topics import DELIVERY, Channel

if TYPE_CHECKING:
    from firmware_sim.locker import Locker


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One MQTT publish (or serial frame) the transport must send."""

    channel: Channel
    payload: bytes
    qos: int
    retain: bool

    @classmethod
    def on(cls, channel: Channel, payload: bytes) -> Outgoing:
        delivery = DELIVERY[channel]
        return cls(channel, payload, delivery.qos, delivery.retain)


BirthBuilder = Callable[[int, int, int], Birth]
"""Builds the birth for ``(seq, ts, pending_events)``."""


class Uplink:
    """Sequence numbers, buffer and outgoing queue of one boot of one locker."""

    __slots__ = (
        "acks_accepted",
        "acks_rejected",
        "board",
        "boot_id",
        "connected",
        "connection",
        "counters",
        "dropped_now",
        "locker_id",
        "nv",
        "outbox",
        "outgoing",
        "seq",
        "store",
    )

    def __init__(
        self,
        locker_id: str,
        nv: NonVolatile,
        store: NvStore,
        limits: OutboxLimits,
        board: Locker,
        counters: Counter[str],
    ) -> None:
        self.locker_id = locker_id
        self.counters = counters
        self.nv = nv
        self.store = store
        self.boot_id = nv.boot_id
        self.board = board
        """The locker this boot runs on (asked for the time: no bound method kept per boot)."""
        self.outbox = Outbox(nv.outbox, limits)
        self.seq = 0
        self.connection = 0
        self.connected = False
        self.outgoing: list[Outgoing] | None = None
        """What the transport must send now (None while nothing: a list is made per batch)."""
        self.dropped_now = 0
        self.acks_accepted = 0
        self.acks_rejected = 0

    def now(self) -> int:
        """The board's real-time clock (skew included): what goes into ``ts``."""
        return self.board.rtc_ms()

    def clock(self) -> int:
        """Monotonic time for resending (never stepped by a clock fault)."""
        return self.board.clock.now_ms()

    # --- sequenced messages -----------------------------------------------------------------

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _keep(self, channel: Channel, seq: int, payload: bytes) -> None:
        """Buffer a sequenced message, discarding the oldest if the buffer is full, and send
        it if the link is up."""
        if not self.outbox.has_room():
            self._discard_oldest()
        self.outbox.add(Buffered(self.boot_id, seq, channel, payload))
        self.store.commit(self.nv)
        if self.connected:
            self.flush()

    def event(self, data: EventData) -> int:
        """Buffer an event; return its sequence number (taken even if the buffer was full)."""
        seq = self._next_seq()
        message = Event.of(self.locker_id, self.boot_id, seq, self.now(), data)
        self.counters[message.event.value] += 1
        self._keep(Channel.EVENT, seq, encode(message))
        return seq

    def result(self, build: Callable[[int, int], CommandResult]) -> int:
        """Buffer the result ``build(seq, ts)``; return its sequence number."""
        seq = self._next_seq()
        message = build(seq, self.now())
        self.counters[f"result_{message.status.value}"] += 1
        self._keep(Channel.RESULT, seq, encode(message))
        return seq

    def birth(self, build: BirthBuilder) -> int:
        """Buffer a birth (a rebirth on request); return its sequence number."""
        seq = self._next_seq()
        self._keep(Channel.BIRTH, seq, encode_birth(build(seq, self.now(), len(self.outbox))))
        return seq

    # --- overflow ---------------------------------------------------------------------------

    def _discard_oldest(self) -> None:
        """Make room (protocol §5.7): drop the oldest buffered message of this boot, or of an
        earlier boot if this one has none; remember this boot's losses for the report."""
        entry = self.outbox.discard_oldest(prefer_boot=self.boot_id)
        if entry is None:
            return
        nv = self.nv
        nv.events_dropped_total += 1
        self.dropped_now += 1
        if entry.boot_id == self.boot_id:
            record = nv.dropped
            if record is None or record.boot_id != self.boot_id:
                nv.dropped = DropRecord(self.boot_id, 1, entry.seq, entry.seq)
            else:
                record.count += 1
                record.first_seq = min(record.first_seq, entry.seq)
                record.last_seq = max(record.last_seq, entry.seq)

    def report_drops(self) -> None:
        """Report this boot's discarded messages once there is room again (``events_dropped``
        with the count and the range of numbers). A record left by an earlier boot can no
        longer be reported in its own stream and is forgotten; ``events_dropped_total`` in
        telemetry still counts it."""
        record = self.nv.dropped
        if record is None:
            return
        if record.boot_id != self.boot_id:
            self.nv.dropped = None
            self.store.commit(self.nv)
            return
        if not self.outbox.has_room():
            return
        self.nv.dropped = None
        self.event(EventsDropped(record.count, record.first_seq, record.last_seq))

    # --- connection -------------------------------------------------------------------------

    def presence(self, state: PresenceState, connection: int) -> Outgoing:
        message = Presence(self.locker_id, self.boot_id, self.seq, connection, state, self.now())
        return Outgoing.on(Channel.PRESENCE, encode(message))

    def last_will(self) -> Outgoing:
        """The retained ``offline`` presence the broker publishes if the link dies."""
        return self.presence(PresenceState.OFFLINE, self.connection + 1)

    def connect(self, build_birth: BirthBuilder) -> None:
        """The link is up: presence online, birth first, then the replay."""
        self.connected = True
        self.connection += 1
        self._send(self.presence(PresenceState.ONLINE, self.connection))
        seq = self._next_seq()
        payload = encode_birth(build_birth(seq, self.now(), len(self.outbox)))
        if not self.outbox.has_room():
            self._discard_oldest()
        self.outbox.add(Buffered(self.boot_id, seq, Channel.BIRTH, payload))
        self.store.commit(self.nv)
        entry = self.outbox.send_first((self.boot_id, seq), self.clock())
        if entry is not None:
            self._send(Outgoing.on(entry.channel, entry.payload))
        self.flush()

    def disconnect(self) -> None:
        """The link is down: nothing is in flight any more; queued output is void."""
        self.connected = False
        self.outbox.connection_lost()
        self.outgoing = None

    def telemetry(self, message: Telemetry) -> None:
        if self.connected:
            self._send(Outgoing.on(Channel.TELEMETRY, encode(message)))

    def flush(self) -> None:
        """Queue whatever the buffer says is due (first sends and retransmissions)."""
        if self.connected:
            for entry in self.outbox.due(self.clock()):
                self._send(Outgoing.on(entry.channel, entry.payload))

    def acknowledge(self, payload: bytes, command_key: bytes) -> int | None:
        """Apply a received acknowledgement if it is authentic; return how many messages it
        removed, or ``None`` if it was refused (unsigned, forged, another locker's)."""
        ack = check_ack(payload, locker_id=self.locker_id, key=command_key)
        if ack is None:
            self.acks_rejected += 1
            return None
        self.acks_accepted += 1
        removed = self.outbox.acknowledge(ack.boot_id, ack.ranges)
        if removed:
            self.store.commit(self.nv)
            self.report_drops()
            self.flush()
        return removed

    def next_deadline(self) -> int | None:
        return self.outbox.next_deadline(self.clock()) if self.connected else None

    def _send(self, out: Outgoing) -> None:
        if self.outgoing is None:
            self.outgoing = [out]
        else:
            self.outgoing.append(out)

    def take(self) -> list[Outgoing]:
        out = self.outgoing
        if out is None:
            return []
        self.outgoing = None
        return out
