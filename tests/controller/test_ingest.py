"""Bad input from the MQTT side: every malformed, forged or misplaced message is rejected with a
clear reason, and the database is exactly as it was (except the raw copy of a sequenced
message whose envelope was readable, kept and acknowledged so a buggy locker stops resending).
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from controller.db.models import Command, Compartment, DeviceMessage, Locker
from controller.runtime import Runtime
from controller.services.ingest import Inbound
from protocol.auth import check_ack
from protocol.codec import MAX_PAYLOAD_BYTES, encode
from protocol.messages import DoorClosed, EventsDropped
from tests.controller.support import ScriptedLocker


async def snapshot(runtime: Runtime) -> tuple[int, int, list[tuple[str, bool, str]]]:
    async with runtime.db.reader() as session:
        messages = await session.scalar(select(func.count(DeviceMessage.id)))
        commands = await session.scalar(select(func.count(Command.id)))
        rows = (
            await session.execute(
                select(Compartment.label, Compartment.occupied, Compartment.door).order_by(
                    Compartment.id
                )
            )
        ).all()
    return int(messages or 0), int(commands or 0), list(rows)


def event_topic(runtime: Runtime, locker_id: str, channel: str = "event") -> str:
    return f"{runtime.ctx.topics.root}/locker/{locker_id}/{channel}"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"not json", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        (b"[1, 2]", "not_an_object"),
        (b'{"v": 2, "type": "event"}', "unsupported_version"),
        (b'{"v": 1, "type": "firmware_update"}', "unknown_type"),
        (b"{" * 5000 + b"}" * 5000, "malformed_json"),
        (b'{"v":1,"type":"event","locker_id":"X","boot_id":1}', "missing_field"),
        (b"x" * 20_000, "too_large"),
    ],
)
async def test_malformed_payloads_are_rejected_and_change_nothing(
    runtime: Runtime, locker: ScriptedLocker, payload: bytes, code: str
) -> None:
    before = await snapshot(runtime)
    at = runtime.ctx.clock.now()
    report = await runtime.bridge.ingest.handle(  # type: ignore[union-attr]
        [Inbound(event_topic(runtime, locker.locker_id), payload, at)]
    )
    assert [r.code for r in report.rejected] == [code]
    assert report.rejected[0].reason, "a human-readable reason is given"
    assert report.acks == [] and report.stored == 0
    assert await snapshot(runtime) == before


async def test_a_readable_but_invalid_event_is_kept_raw_and_acknowledged(
    runtime: Runtime, locker: ScriptedLocker
) -> None:
    good = json.loads(encode(locker.event(DoorClosed("A01", True, 1000))))
    good["data"]["compartment"] = "no such label!"
    report = await locker.runtime.bridge.ingest.handle(  # type: ignore[union-attr]
        [
            Inbound(
                event_topic(runtime, locker.locker_id),
                json.dumps(good).encode(),
                runtime.ctx.clock.now(),
            )
        ]
    )
    assert [r.code for r in report.rejected] == ["invalid_field"]
    assert len(report.acks) == 1, "acknowledged, so the locker does not resend it forever"
    async with runtime.db.reader() as session:
        kept = (
            await session.scalars(select(DeviceMessage).where(DeviceMessage.seq == good["seq"]))
        ).one()
        assert kept.kind == "rejected:invalid_field" and kept.payload["raw"] == good
        a01 = (
            await session.scalars(
                select(Compartment).where(
                    Compartment.label == "A01", Compartment.locker_id == locker.locker_id
                )
            )
        ).one()
        assert not a01.occupied, "an invalid event changes no state"


async def test_unknown_lockers_spoofed_topics_and_wrong_channels_are_rejected(
    runtime: Runtime, locker: ScriptedLocker
) -> None:
    before = await snapshot(runtime)
    at = runtime.ctx.clock.now()
    stranger = ScriptedLocker(runtime, "NOT-REGISTERED")
    genuine = locker.event(DoorClosed("A01", True, 1000))
    items = [
        Inbound(stranger.topic(genuine), encode(stranger.event(DoorClosed("A01", True, 1))), at),
        # a message of our locker published on another locker's topic (a spoof)
        Inbound(event_topic(runtime, "NOT-REGISTERED"), encode(genuine), at),
        # an event on the birth channel
        Inbound(event_topic(runtime, locker.locker_id, "birth"), encode(genuine), at),
        # lockers never publish commands
        Inbound(event_topic(runtime, locker.locker_id, "cmd"), encode(genuine), at),
        Inbound("somewhere/else", encode(genuine), at),
    ]
    report = await runtime.bridge.ingest.handle(items)  # type: ignore[union-attr]
    codes = sorted(r.code for r in report.rejected)
    assert codes == sorted(
        ["unknown_locker", "topic_mismatch", "topic_mismatch", "invalid_topic", "invalid_topic"]
    ), codes
    assert report.acks == [], "nothing is acknowledged to anyone on a rejected message"
    assert await snapshot(runtime) == before


async def test_gaps_and_lost_events_bring_a_rebirth_request(
    runtime: Runtime, locker: ScriptedLocker
) -> None:
    locker.seq += 5  # five events never arrive
    await locker.send(locker.event(DoorClosed("A01", False, 10)))
    async with runtime.db.reader() as session:
        row = await session.get(Locker, locker.locker_id)
        assert row is not None and row.gap_since is not None
    runtime.ctx.clock.advance(seconds=61)  # type: ignore[attr-defined]
    assert (await runtime.services.housekeeping.run_once())["rebirths"] == 1
    await locker.send(locker.event(EventsDropped(3, 20, 22)))
    async with runtime.db.reader() as session:
        rebirths = (
            await session.scalars(select(Command).where(Command.action == "request_rebirth"))
        ).all()
        assert len(rebirths) == 1, "one request while the first is fresh, not one per event"


async def test_a_badly_fragmented_stream_is_acknowledged_in_acks_that_fit_a_payload(
    runtime: Runtime, locker: ScriptedLocker
) -> None:
    """600 events with every other number missing make 600 ranges: more than one ack can
    carry within the 16 KiB payload limit. They are split, and together cover every event."""
    events = []
    for _ in range(600):
        events.append(locker.event(DoorClosed("A01", False, 10)))
        locker.seq += 1  # the next number never arrives
    report = await locker.send(*events)
    assert report.stored == 600 and report.rejected == []
    key = runtime.ctx.keys.command_key(locker.locker_id, 1)
    covered: set[int] = set()
    for ack in report.acks:
        assert len(ack.payload) <= MAX_PAYLOAD_BYTES
        checked = check_ack(ack.payload, locker_id=locker.locker_id, key=key)
        assert checked is not None, "signed with the locker's key"
        for r in checked.ranges:
            covered.update(range(r.first, r.last + 1))
    assert len(report.acks) > 1
    assert covered == {e.seq for e in events}
