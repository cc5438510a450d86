"""The bridge's inbox: messages straight from paho's callback, taken out in batches, bounded.

Pure logic with paho's own message objects (no broker); the bridge's use of it against a real
Mosquitto is covered by test_bridge_acks, test_ingest_replicas and the end-to-end tests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import aiomqtt
import paho.mqtt.client as paho

from controller.mqtt.inbox import Inbox, Lanes

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@dataclass
class Counters:
    received: int = 0
    overflowed: int = 0


def message(n: int, payload: bytes | bytearray = b"{}") -> paho.MQTTMessage:
    m = paho.MQTTMessage(mid=n, topic=f"root/v1/locker/L{n}/event".encode())
    m.payload = payload
    return m


def deliver(inbox: Inbox, *messages: paho.MQTTMessage) -> None:
    for m in messages:
        inbox.on_message(None, None, m)


async def test_messages_keep_topic_payload_time_and_order() -> None:
    counters = Counters()
    inbox = Inbox(lambda: NOW, counters)
    deliver(inbox, message(1), message(2, bytearray(b'{"a":1}')))
    batch = await inbox.take(10, 0)
    assert [(i.topic, i.payload, i.received_at) for i in batch] == [
        ("root/v1/locker/L1/event", b"{}", NOW),
        ("root/v1/locker/L2/event", b'{"a":1}', NOW),
    ]
    assert all(type(i.payload) is bytes for i in batch)
    assert counters == Counters(received=2)
    assert len(inbox) == 0


async def test_a_full_inbox_drops_and_counts_and_keeps_what_it_holds() -> None:
    counters = Counters()
    inbox = Inbox(lambda: NOW, counters, limit=3)
    deliver(inbox, *(message(n) for n in range(5)))
    assert (len(inbox), counters) == (3, Counters(received=3, overflowed=2))
    # What it holds is intact and in order; once taken there is room again.
    assert [i.topic for i in inbox.take_now(10)] == [f"root/v1/locker/L{n}/event" for n in range(3)]
    deliver(inbox, message(9))
    assert [i.topic for i in inbox.take_now(10)] == ["root/v1/locker/L9/event"]
    assert counters == Counters(received=4, overflowed=2)


async def test_take_waits_for_the_first_and_returns_at_most_a_batch() -> None:
    inbox = Inbox(lambda: NOW, Counters())
    waiting = asyncio.create_task(inbox.take(3, 0))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # nothing yet: it waits
    deliver(inbox, *(message(n) for n in range(5)))
    assert len(await asyncio.wait_for(waiting, 5)) == 3
    assert len(inbox) == 2  # the rest waits for the next batch


async def test_a_full_batch_ends_the_wait_for_more() -> None:
    inbox = Inbox(lambda: NOW, Counters())
    # Waiting up to an hour for more after the first: the batch filling up ends the wait.
    waiting = asyncio.create_task(inbox.take(4, 3600))
    await asyncio.sleep(0.01)
    deliver(inbox, message(0))
    await asyncio.sleep(0.01)
    assert not waiting.done(), "it waits for more after the first"
    deliver(inbox, *(message(n) for n in range(1, 4)))
    assert len(await asyncio.wait_for(waiting, 5)) == 4


async def test_messages_already_waiting_are_taken_without_waiting_for_more() -> None:
    inbox = Inbox(lambda: NOW, Counters())
    deliver(inbox, message(0), message(1))
    # Under load the next batch is already waiting: an hour's wait must not apply.
    assert len(await asyncio.wait_for(inbox.take(100, 3600), 5)) == 2


async def test_take_returns_what_came_within_the_wait() -> None:
    inbox = Inbox(lambda: NOW, Counters())
    waiting = asyncio.create_task(inbox.take(100, 0.02))
    await asyncio.sleep(0)
    deliver(inbox, message(0))
    assert len(await asyncio.wait_for(waiting, 5)) == 1


async def test_lanes_take_over_an_aiomqtt_clients_messages() -> None:
    client = aiomqtt.Client("127.0.0.1", 1)  # never connected
    lanes = Lanes([Inbox(lambda: NOW, Counters())], "root/v1")
    lanes.attach(client)
    assert client._client.on_message == lanes.on_message
