"""Two replicas sharing the lockers' streams do not queue on each other's row locks.

A batch handed in by the bridge skips the locker rows another transaction holds (PostgreSQL's
``SKIP LOCKED``) and gives their messages back untouched; handed in again with those lockers
to wait for, they are stored like any other. Nothing is stored twice, nothing is lost, and
nothing is acknowledged before it is stored.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from controller.db.models import DeviceMessage, Locker
from controller.runtime import Runtime
from controller.services.ingest import Inbound
from controller.testing.seed import Seeded
from protocol.codec import encode
from protocol.messages import DoorClosed
from protocol.topics import Channel
from tests.controller.support import LAYOUT, ScriptedLocker


async def stored(runtime: Runtime, locker_id: str) -> int:
    async with runtime.db.reader() as session:
        count = await session.scalar(
            select(func.count(DeviceMessage.id)).where(DeviceMessage.locker_id == locker_id)
        )
    return int(count or 0)


async def test_a_locker_held_by_another_replica_is_deferred_once_then_stored(
    runtime: Runtime, seeded: Seeded
) -> None:
    if runtime.db.dialect != "postgresql":
        pytest.skip("SQLite locks the whole database for a writer: there are no rows to skip")
    first, second = (ScriptedLocker(runtime, locker_id) for locker_id in seeded.lockers)
    for scripted in (first, second):
        await scripted.come_online(LAYOUT)
    before = {s.locker_id: await stored(runtime, s.locker_id) for s in (first, second)}
    at = runtime.ctx.clock.now()
    events = [s.event(DoorClosed("A01", False, n)) for s in (first, second) for n in range(3)]
    batch = [
        Inbound(runtime.ctx.topics.locker(e.locker_id, Channel.EVENT), encode(e), at)
        for e in events
    ]
    ingest = runtime.bridge.ingest  # type: ignore[union-attr]
    async with runtime.db.sessions.begin() as other_replica:
        await other_replica.execute(
            select(Locker).where(Locker.id == first.locker_id).with_for_update()
        )
        report = await ingest.handle(batch, sign_acks=False, wait_for=set())
        assert report.deferred_lockers == {first.locker_id}
        assert report.deferred == batch[:3], "the held locker's messages, untouched, in order"
        assert report.stored == 3 and report.rejected == []
        assert set(report.to_ack.seqs) == {(second.locker_id, 1)}, "only what was stored"
    assert await stored(runtime, first.locker_id) == before[first.locker_id]
    assert await stored(runtime, second.locker_id) == before[second.locker_id] + 3

    again = await ingest.handle(report.deferred, sign_acks=False, wait_for=report.deferred_lockers)
    assert again.deferred == [] and again.stored == 3 and again.duplicates == 0
    assert again.to_ack.seqs[first.locker_id, 1] == {e.seq for e in events[:3]}
    assert await stored(runtime, first.locker_id) == before[first.locker_id] + 3
