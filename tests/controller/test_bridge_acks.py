"""The bridge acknowledges only what is committed, and merges the acks of back-to-back batches.

A locker (an independent aiomqtt client) publishes events while another database connection
holds the write lock: nothing may be acknowledged while the rows cannot be stored. Once the
lock is released, every event is stored and acknowledged, each ack signed with the locker's
key, and — the batches having queued up — in fewer acks than batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import aiomqtt
import pytest
from sqlalchemy import func, select, text

from controller.db.engine import open_database
from controller.db.models import DeviceMessage
from controller.runtime import build_runtime
from controller.testing.seed import seed_county
from controller.testing.waiting import eventually
from protocol.auth import check_ack
from protocol.codec import encode
from protocol.messages import DoorClosed
from protocol.topics import Channel
from protocol.urls import BrokerAddress
from tests.controller.conftest import controller_settings
from tests.controller.support import LAYOUT, ScriptedLocker

pytestmark = [pytest.mark.mqtt]

EVENTS = 200


@contextlib.asynccontextmanager
async def write_lock_held(url: str) -> AsyncIterator[None]:
    """Another connection holding what the ingest needs to write, until the block ends."""
    db = open_database(url)
    try:
        # On SQLite the engine begins writers IMMEDIATE: that alone takes the write lock.
        async with db.engine.begin() as connection:
            if db.dialect == "postgresql":
                await connection.execute(text("LOCK TABLE device_messages IN EXCLUSIVE MODE"))
            yield
    finally:
        await db.dispose()


async def test_nothing_is_acknowledged_before_it_is_stored_and_queued_batches_share_acks(
    migrated_url: str, topic_root: str, mqtt_broker: BrokerAddress
) -> None:
    settings = controller_settings(migrated_url, topic_root, mqtt_broker).model_copy(
        update={"ingest_batch_size": 10}
    )
    runtime = build_runtime(settings)
    seeded = await seed_county(runtime, lockers=1, prefix=f"A{uuid.uuid4().hex[:6]}")
    locker_id = next(iter(seeded.lockers))
    scripted = ScriptedLocker(runtime, locker_id)
    await scripted.come_online(LAYOUT)  # straight through the ingest, before the bridge runs
    first_seq = scripted.seq + 1
    events = [scripted.event(DoorClosed("A01", False, n)) for n in range(EVENTS)]
    key = runtime.ctx.keys.command_key(locker_id, 1)
    acked: set[int] = set()
    acks = 0
    await runtime.start()
    bridge = runtime.bridge
    assert bridge is not None
    try:
        await eventually(lambda: bridge.stats.connected, what="the bridge connected")
        async with aiomqtt.Client(
            mqtt_broker.host, mqtt_broker.port, username=mqtt_broker.username,
            password=mqtt_broker.password, identifier=f"locker-{locker_id}",
        ) as device:  # fmt: skip
            await device.subscribe(runtime.ctx.topics.locker(locker_id, Channel.ACK), qos=1)

            async def collect() -> None:
                nonlocal acks
                with contextlib.suppress(aiomqtt.MqttError):
                    async for message in device.messages:
                        assert isinstance(message.payload, bytes)
                        ack = check_ack(message.payload, locker_id=locker_id, key=key)
                        assert ack is not None, "every ack is signed with the locker's key"
                        acks += 1
                        for r in ack.ranges:
                            acked.update(range(r.first, r.last + 1))

            collector = asyncio.create_task(collect())
            batches_before = bridge.stats.batches
            async with write_lock_held(migrated_url):
                for event in events:
                    await device.publish(scripted.topic(event), encode(event), qos=1)
                await eventually(
                    lambda: bridge.stats.received >= EVENTS, what="the bridge received them"
                )
                await asyncio.sleep(1.0)
                assert acked == set(), "nothing is acknowledged while it cannot be stored"
            want = set(range(first_seq, first_seq + EVENTS))
            await eventually(lambda: acked >= want, within=30, what="every event acknowledged")
            collector.cancel()
        async with runtime.db.reader() as session:
            stored = await session.scalar(
                select(func.count()).where(
                    DeviceMessage.locker_id == locker_id, DeviceMessage.seq >= first_seq
                )
            )
        assert stored == EVENTS, "each event stored exactly once"
        batches = bridge.stats.batches - batches_before
        assert batches >= EVENTS // 10
        assert acks < batches, f"{acks} acks for {batches} queued batches: they were merged"
    finally:
        await runtime.stop()
