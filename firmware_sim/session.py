"""The parts of an MQTT fleet: how it is configured, one locker's link, the fleet's counters.

:class:`FleetOptions` configures an :class:`~firmware_sim.fleet.MqttFleet`; a
:class:`LockerSession` is the transport side of one locker (its paho client, topics and the
state of its link, :class:`LinkState`); :class:`FleetStats` is a snapshot of the client-side
counters. They are plain data: the behaviour is in :mod:`firmware_sim.fleet`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from firmware_sim.locker import Locker
from firmware_sim.outbox import OutboxLimits
from firmware_sim.people import AttendantPolicy
from firmware_sim.settings import Settings
from protocol.topics import DEFAULT_ROOT, Channel, TopicLayout


@dataclass(frozen=True, slots=True)
class FleetOptions:
    """How a fleet connects and behaves (every field has a sensible default)."""

    topic_root: str = DEFAULT_ROOT
    keepalive_s: int = 60
    connect_workers: int | None = None
    """Threads for TCP connects; 0: on the network thread; None: 0 for a broker on this
    machine (a loopback address), else 4 (an unreachable broker must not stall the fleet)."""
    connect_window: int = 64
    connect_interval_ms: int = 0
    reconnect_min_ms: int = 1_000
    reconnect_max_ms: int = 60_000
    connack_timeout_ms: int = 15_000
    misc_period_ms: int = 5_000
    """Each client's ``loop_misc`` (keep-alive) runs about this often."""
    settings: Settings = field(default_factory=Settings)
    """Factory settings of every locker (a short heartbeat for tests, say)."""
    limits: OutboxLimits = field(default_factory=OutboxLimits)
    attendant: AttendantPolicy | None = field(default_factory=AttendantPolicy)
    """Who completes remote opens physically; None: nobody comes."""
    seed: int = 0
    time_scale: float = 1.0
    """Run the lockers' clock this many times faster than real time (see ScaledClock)."""

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ValueError("time_scale must be positive")
        if self.connect_window < 1:
            raise ValueError("connect_window must be at least 1")
        if self.connect_workers is not None and self.connect_workers < 0:
            raise ValueError("connect_workers must not be negative")
        if not 0 < self.reconnect_min_ms <= self.reconnect_max_ms:
            raise ValueError("need 0 < reconnect_min_ms <= reconnect_max_ms")


class LinkState(enum.Enum):
    IDLE = "idle"  # not wanted (power off, network down) or not started
    QUEUED = "queued"  # waiting for a connect slot
    BACKOFF = "backoff"  # waiting before trying again
    CONNECTING = "connecting"  # TCP connect on a worker thread
    HANDSHAKE = "handshake"  # CONNECT sent, waiting for CONNACK
    CONNECTED = "connected"


@dataclass(frozen=True, slots=True)
class FleetStats:
    """Client-side counters of a fleet at one moment."""

    lockers: int
    connected: int
    ever_connected: int
    connacks: int
    connack_refused: int
    publishes: int
    pubacks: int
    received: int
    foreign_dropped: int
    reconnects: int
    connect_failures: int
    disconnects: int
    errors: int
    faults: dict[str, int]
    faults_not_applicable: dict[str, int]
    last_error: str


class LockerSession:
    """The MQTT side of one locker."""

    __slots__ = (
        "attempt",
        "client",
        "connected_once",
        "deadline",
        "dirty",
        "failures",
        "link_boot",
        "locker",
        "pending_mids",
        "state",
        "subscription",
        "topic_prefix",
    )

    def __init__(
        self,
        locker: Locker,
        client: mqtt.Client,
        layout: TopicLayout,
        dirty: set[LockerSession] | None = None,
    ) -> None:
        lid = locker.locker_id
        self.locker = locker
        self.client = client
        command_topic = layout.locker(lid, Channel.COMMAND)
        self.topic_prefix = command_topic[: -len(Channel.COMMAND.value)]
        """This locker's topics but the channel (the only topic string kept per locker)."""
        self.state = LinkState.IDLE
        self.deadline: int | None = None
        self.failures = 0
        self.attempt = 0
        self.link_boot = 0
        self.connected_once = False
        self.pending_mids: set[int] | None = None
        """Message ids of QoS 1 publishes awaiting their PUBACK (None: none yet)."""
        self.subscription: int | None = None
        self.dirty: set[LockerSession] = set() if dirty is None else dirty
        """The fleet's sessions to pump (the session is the locker's ``on_change``)."""

    def __call__(self) -> None:
        """The locker has something to send, a new deadline or another wish: pump it soon."""
        self.dirty.add(self)

    def topic(self, channel: Channel) -> str:
        """Return this locker's topic of ``channel`` (made when needed, not kept)."""
        return self.topic_prefix + channel.value

    def channel_of(self, topic: str) -> Channel | None:
        """Return the channel of a topic this locker subscribes to (commands, acks), or None."""
        prefix = self.topic_prefix
        if not topic.startswith(prefix):
            return None
        rest = topic[len(prefix) :]
        if rest == Channel.COMMAND.value:
            return Channel.COMMAND
        if rest == Channel.ACK.value:
            return Channel.ACK
        return None
