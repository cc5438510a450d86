"""What the simulator's tests share: a controller's signer, an independent MQTT observer, and a
desk that plays the controller for a locker on a manual clock.

The signer and the observer stand where the controller would, and use only :mod:`protocol` and
paho, never the simulator's own code: the keys are derived here from the documented recipe
(HMAC-SHA256 keyed with ``lockerfleet-sim/{seed}`` over ``{purpose}\\n{locker_id}``), commands
and acks are signed with :mod:`protocol.auth`, and what the lockers publish is read by a raw
paho client.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from firmware_sim.locker import Locker
from firmware_sim.simulation import Simulation
from protocol.auth import sign_ack, sign_command
from protocol.codec import decode_device_message, encode
from protocol.messages import (
    Ack,
    Birth,
    Command,
    CommandArgs,
    CommandResult,
    DeviceMessage,
    Event,
    EventData,
)
from protocol.sequence import to_ranges
from protocol.topics import Channel, TopicLayout
from protocol.urls import BrokerAddress

SEED = 4242


def derived_key(seed: int, locker_id: str, purpose: str) -> bytes:
    """The documented key recipe of generated fleets, written out independently."""
    return hmac.new(
        f"lockerfleet-sim/{seed}".encode(), f"{purpose}\n{locker_id}".encode(), hashlib.sha256
    ).digest()


@dataclass
class Signer:
    """Builds signed commands and acks for lockers of a generated fleet, as a controller does."""

    seed: int = SEED
    now: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    counters: dict[str, itertools.count[int]] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def key(self, locker_id: str) -> bytes:
        return derived_key(self.seed, locker_id, "command")

    def code_key(self, locker_id: str) -> bytes:
        return derived_key(self.seed, locker_id, "code")

    def command(
        self,
        locker_id: str,
        args: CommandArgs,
        *,
        counter: int | None = None,
        lifetime_ms: int = 60_000,
        issued_at: int | None = None,
        key: bytes | None = None,
        command_id: str | None = None,
    ) -> Command:
        """Return a signed command (counters increase per locker unless one is given)."""
        if counter is None:
            counter = next(self.counters.setdefault(locker_id, itertools.count(1)))
        issued = self.now() if issued_at is None else issued_at
        cid = command_id or f"cmd-{next(self.ids):08d}"
        unsigned = Command.of(locker_id, cid, counter, issued, issued + lifetime_ms, args)
        return sign_command(unsigned, key or self.key(locker_id))

    def ack(self, locker_id: str, boot_id: int, seqs: Iterable[int]) -> Ack:
        unsigned = Ack(locker_id, boot_id, to_ranges(seqs), self.now())
        return sign_ack(unsigned, self.key(locker_id))


class Observer:
    """A raw paho subscriber to every locker topic under a root, keeping decoded messages.

    With ``acker`` set it also acknowledges every birth, event and result (signed), as the
    controller would after storing them.
    """

    def __init__(
        self, broker: BrokerAddress, root: str, *, acker: Signer | None = None, name: str = ""
    ) -> None:
        self.layout = TopicLayout(root)
        self.acker = acker
        self.lock = threading.Lock()
        self.messages: dict[str, list[DeviceMessage]] = defaultdict(list)
        self.raw: list[tuple[str, bytes, bool]] = []
        self.undecodable = 0
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=name or f"observer-{id(self)}"
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("the observer could not subscribe")

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        client.subscribe(f"{self.layout.root}/locker/#", qos=1)

    def _on_message(self, client: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        with self.lock:
            self.raw.append((msg.topic, payload, bool(msg.retain)))
        try:
            locker_id, channel = self.layout.parse(msg.topic)
        except ValueError:
            return
        if channel in (Channel.COMMAND, Channel.ACK):
            return
        try:
            message = decode_device_message(payload)
        except ValueError:
            with self.lock:
                self.undecodable += 1
            return
        with self.lock:
            self.messages[locker_id].append(message)
        if self.acker is not None and channel in (Channel.BIRTH, Channel.EVENT, Channel.RESULT):
            seq = message.seq
            boot = message.boot_id
            ack = self.acker.ack(locker_id, boot, [seq])
            client.publish(self.layout.locker(locker_id, Channel.ACK), encode(ack), qos=1)

    def of(self, locker_id: str, kind: type[DeviceMessage] | None = None) -> list[DeviceMessage]:
        with self.lock:
            got = list(self.messages.get(locker_id, []))
        return [m for m in got if kind is None or isinstance(m, kind)]

    def lockers_with(self, kind: type[DeviceMessage]) -> set[str]:
        with self.lock:
            return {
                lid for lid, ms in self.messages.items() if any(isinstance(m, kind) for m in ms)
            }

    def send(self, locker_id: str, channel: Channel, payload: bytes) -> None:
        info = self.client.publish(self.layout.locker(locker_id, channel), payload, qos=1)
        info.wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` until true; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or 'a condition'}")
        time.sleep(0.02)


class Desk:
    """Plays the controller for one locker in a :class:`Simulation`: takes what it sent,
    drops duplicates by ``(boot_id, seq)`` as a receiver must, and acknowledges them (signed),
    so that nothing is retransmitted to a test that has already seen it."""

    def __init__(
        self, sim: Simulation, locker: Locker, signer: Signer, *, acknowledge: bool = True
    ) -> None:
        self.sim = sim
        self.locker = locker
        self.signer = signer
        self.acknowledge = acknowledge
        self.seen: set[tuple[int, int]] = set()
        self.duplicates = 0

    def take(self) -> list[DeviceMessage]:
        out: list[DeviceMessage] = []
        fresh: dict[int, list[int]] = defaultdict(list)
        for message in self.sim.take_messages(self.locker.locker_id):
            if isinstance(message, Birth | Event | CommandResult):
                key = (message.boot_id, message.seq)
                if key in self.seen:
                    self.duplicates += 1
                    continue
                self.seen.add(key)
                fresh[message.boot_id].append(message.seq)
            out.append(message)
        if self.acknowledge:
            for boot_id, seqs in fresh.items():
                ack = self.signer.ack(self.locker.locker_id, boot_id, seqs)
                self.locker.receive(Channel.ACK, encode(ack))
        return out

    def events(self) -> list[EventData]:
        return [m.data for m in self.take() if isinstance(m, Event)]

    def results(self) -> list[CommandResult]:
        return [m for m in self.take() if isinstance(m, CommandResult)]

    def command(self, args: CommandArgs, **kw: Any) -> Command:
        """Sign ``args`` for this locker and deliver them; return the command."""
        command = self.signer.command(self.locker.locker_id, args, **kw)
        self.locker.receive(Channel.COMMAND, encode(command))
        return command


def slam(label: str) -> Callable[[Locker], None]:
    """Someone forces the door of ``label`` open and shuts it again."""

    def act(locker: Locker) -> None:
        locker.open_door(label)
        locker.close_door(label)

    return act


def stock(label: str) -> Callable[[Locker], None]:
    """A technician opens ``label`` with the service key, puts a parcel in, shuts it."""

    def act(locker: Locker) -> None:
        locker.open_door(label)
        locker.put_item(label)
        locker.close_door(label)

    return act
