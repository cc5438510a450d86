"""Where the bridge's incoming messages wait for the ingest: paho's message callback appends
them to a deque, the ingest takes them out in batches.

aiomqtt hands each message over as its own ``Message`` (with a validated ``Topic``) through an
``asyncio.Queue``, and its iterator starts a task and an ``asyncio.wait`` for every one: about
as much Python work as storing the message. The bridge receives thousands a second and only
ever wants them in batches, so it takes them straight from paho's callback (which aiomqtt
runs on the event loop, from the socket's reader) and still uses aiomqtt for everything else:
connecting, subscribing, publishing, and noticing a lost connection.

The inbox is bounded. Beyond ``limit`` waiting messages new ones are dropped and counted:
the broker considers them delivered, but nothing acknowledges them end to end, so their
lockers send them again (ADR 0003); the same holds for whatever is in the inbox when the
process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import aiomqtt
import paho.mqtt.client as paho

from controller.mqtt.reading import paho_client_of
from controller.services.ingest import Inbound


class Counters(Protocol):
    received: int
    overflowed: int


class Inbox:
    def __init__(
        self, now: Callable[[], datetime], counters: Counters, limit: int = 50_000
    ) -> None:
        self._now = now
        self.counters = counters
        """Where arrivals and drops are counted (the bridge's stats: they outlive the inbox)."""
        self.limit = limit
        self._items: deque[Inbound] = deque()
        self._arrived = asyncio.Event()
        self._wanted = 1
        """How many waiting messages wake :meth:`take` (one wake a batch, not a message)."""

    def __len__(self) -> int:
        return len(self._items)

    def on_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        """paho's callback, on the event loop: keep the topic, the payload and the time."""
        if len(self._items) >= self.limit:
            self.counters.overflowed += 1
            return
        payload = message.payload
        if type(payload) is not bytes:
            payload = bytes(payload)
        self._items.append(Inbound(message.topic, payload, self._now()))
        self.counters.received += 1
        if len(self._items) >= self._wanted:
            self._arrived.set()

    async def take(self, most: int, wait_s: float) -> list[Inbound]:
        """Up to ``most`` messages. When some are waiting already, at once (under load a batch
        never stalls for more). Otherwise waits for the first, then at most ``wait_s`` for
        more (a trickle still comes in batches)."""
        try:
            self._wanted = 1
            waited = False
            while not self._items:
                waited = True
                self._arrived.clear()
                await self._arrived.wait()
            if waited and len(self._items) < most and wait_s > 0:
                self._wanted = most
                self._arrived.clear()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that arrives as the inner call completes, and stop() would then hang.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self._arrived.wait()
        finally:
            self._wanted = 1
        return self.take_now(most)

    def take_now(self, most: int) -> list[Inbound]:
        """Up to ``most`` messages waiting now, without waiting."""
        items = self._items
        count = min(most, len(items))
        return [items.popleft() for _ in range(count)]


class Lanes:
    """Several inboxes, one per ingest lane; a locker's messages always go to the same one.

    Each lane stores its batches in its own transactions, so while one waits for the
    database another runs; a locker's messages stay in order because they share a lane.
    Lanes in one replica are to each other what replicas are (they lock disjoint locker rows).
    """

    def __init__(self, inboxes: list[Inbox], topic_root: str) -> None:
        if not inboxes:
            raise ValueError("at least one lane")
        self.inboxes = inboxes
        self._skip = len(topic_root) + len("/locker/")
        self._prefix = topic_root + "/locker/"

    def __len__(self) -> int:
        return sum(len(i) for i in self.inboxes)

    def attach(self, client: aiomqtt.Client) -> None:
        """Take ``client``'s messages from now on (instead of its ``messages`` iterator)."""
        paho_client_of(client).on_message = self.on_message

    def lane_of(self, topic: str) -> int:
        """The lane of a locker topic (``{root}/locker/{id}/...``); 0 for anything else."""
        count = len(self.inboxes)
        if count == 1 or not topic.startswith(self._prefix):
            return 0
        end = topic.find("/", self._skip)
        return hash(topic[self._skip : end if end >= 0 else None]) % count

    def on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        self.inboxes[self.lane_of(message.topic)].on_message(client, userdata, message)
