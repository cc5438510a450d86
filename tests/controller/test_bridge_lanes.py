"""Ingest lanes: a replica stores several batches side by side, lockers split among lanes.

A locker's topics all map to one lane (so its stream keeps its order) and the lanes share
the fleet. Two dozen lockers publish interleaved events through a real Mosquitto to a bridge
with four lanes (one on SQLite): every event is stored once, every locker's compartment ends
in the state of its last event, and every locker is acknowledged up to its last sequence
number, whether the broker delivers the streams at QoS 0 (the default) or 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import aiomqtt
import paho.mqtt.client as paho
import pytest
from sqlalchemy import func, select

from controller.db.models import Compartment, DeviceMessage
from controller.mqtt.inbox import Inbox, Lanes
from controller.mqtt.reading import paho_client_of
from controller.runtime import build_runtime
from controller.testing.seed import seed_county
from controller.testing.waiting import eventually
from protocol.auth import check_ack
from protocol.codec import encode
from protocol.messages import OccupancyChanged
from protocol.topics import Channel
from protocol.urls import BrokerAddress
from tests.controller.conftest import controller_settings
from tests.controller.support import LAYOUT, ScriptedLocker

LOCKERS = 24
EVENTS = 20


@dataclass
class Counters:
    received: int = 0
    overflowed: int = 0


def test_a_lockers_topics_share_a_lane_and_every_lane_is_used() -> None:
    now = datetime(2026, 11, 23, tzinfo=UTC)
    lanes = Lanes([Inbox(lambda: now, Counters()) for _ in range(4)], "county/v1")
    for n in range(50):
        topics = [f"county/v1/locker/L{n:03d}/{c.value}" for c in Channel]
        assert len({lanes.lane_of(t) for t in topics}) == 1
    spread = {lanes.lane_of(f"county/v1/locker/L{n:03d}/event") for n in range(200)}
    assert spread == {0, 1, 2, 3}
    assert lanes.lane_of("county/v1/controller/x/presence") == 0
    assert lanes.lane_of("elsewhere/locker/L001/event") == 0
    assert Lanes([Inbox(lambda: now, Counters())], "r").lane_of("r/locker/L1/event") == 0


@pytest.mark.mqtt
@pytest.mark.parametrize("stream_qos", [0, 1])
async def test_interleaved_lockers_through_four_lanes_keep_each_stream_whole_and_in_order(
    migrated_url: str, topic_root: str, mqtt_broker: BrokerAddress, stream_qos: int
) -> None:
    """At either QoS the broker delivers the streams at (``stream_qos``)."""
    settings = controller_settings(migrated_url, topic_root, mqtt_broker).model_copy(
        update={"ingest_lanes": 4, "ingest_batch_size": 7, "stream_qos": stream_qos}
    )
    runtime = build_runtime(settings)
    seeded = await seed_county(runtime, lockers=LOCKERS, prefix=f"N{uuid.uuid4().hex[:6]}")
    lockers = [ScriptedLocker(runtime, locker_id) for locker_id in seeded.lockers]
    for scripted in lockers:
        await scripted.come_online(LAYOUT)  # straight through the ingest, before the bridge
    first = {s.locker_id: s.seq + 1 for s in lockers}

    async def stored() -> int:
        async with runtime.db.reader() as session:
            count = await session.scalar(
                select(func.count()).where(DeviceMessage.locker_id.in_(list(first)))
            )
        return int(count or 0)

    before = await stored()
    streams = {
        s.locker_id: [s.event(OccupancyChanged("A01", n % 2 == 0)) for n in range(EVENTS)]
        for s in lockers
    }
    acked: dict[str, set[int]] = {s.locker_id: set() for s in lockers}
    await runtime.start()
    bridge = runtime.bridge
    assert bridge is not None
    expected_lanes = 1 if runtime.db.dialect == "sqlite" else 4
    assert bridge.lane_count() == expected_lanes
    try:
        await eventually(lambda: bridge.stats.connected, what="the bridge connected")
        arrived_at: set[int] = set()  # the QoS the broker delivered the events at
        inner = paho_client_of(bridge._client)
        into_lanes = inner.on_message
        assert into_lanes is not None

        def spy(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
            if message.topic.endswith("/event"):
                arrived_at.add(message.qos)
            into_lanes(client, userdata, message)

        inner.on_message = spy
        async with aiomqtt.Client(
            mqtt_broker.host, mqtt_broker.port, username=mqtt_broker.username,
            password=mqtt_broker.password, identifier=f"fleet-{uuid.uuid4().hex[:8]}",
        ) as fleet:  # fmt: skip
            await fleet.subscribe(runtime.ctx.topics.all_lockers(Channel.ACK), qos=1)

            async def collect() -> None:
                with contextlib.suppress(aiomqtt.MqttError):
                    async for message in fleet.messages:
                        locker_id = runtime.ctx.topics.parse(message.topic.value)[0]
                        key = runtime.ctx.keys.command_key(locker_id, 1)
                        assert isinstance(message.payload, bytes)
                        ack = check_ack(message.payload, locker_id=locker_id, key=key)
                        assert ack is not None
                        for r in ack.ranges:
                            acked[locker_id].update(range(r.first, r.last + 1))

            collector = asyncio.create_task(collect())
            for n in range(EVENTS):  # interleaved as a fleet sends them
                for scripted in lockers:
                    event = streams[scripted.locker_id][n]
                    await fleet.publish(scripted.topic(event), encode(event), qos=1)

            def all_acked() -> bool:
                return all(set(range(first[i], first[i] + EVENTS)) <= acked[i] for i in acked)

            await eventually(all_acked, within=30, what="every locker acknowledged to its end")
            collector.cancel()
        async with runtime.db.reader() as session:
            last_state = dict(
                (
                    await session.execute(
                        select(Compartment.locker_id, Compartment.occupied).where(
                            Compartment.locker_id.in_(list(first)), Compartment.label == "A01"
                        )
                    )
                ).all()
            )
        assert arrived_at == {stream_qos}, "published at QoS 1, delivered at the stream QoS"
        assert await stored() - before == LOCKERS * EVENTS, "every event stored exactly once"
        last = (EVENTS - 1) % 2 == 0
        assert last_state == dict.fromkeys(first, last), "each locker ends in its last event"
    finally:
        await runtime.stop()
