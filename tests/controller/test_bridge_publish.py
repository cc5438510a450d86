"""Publishes the broker does not confirm are counted and sent again, never raised.

A client whose publish fails (aiomqtt raises MqttError on a timeout or a lost connection)
stands in for a broker that does not answer: the bridge counts the failures, reports which
publishes were confirmed, and a dispatched command that was not confirmed is not recorded as
sent, so its lease runs out and it goes out again with the same bytes.
"""

from __future__ import annotations

import aiomqtt
import pytest

from controller.clock import ManualClock
from controller.db.models import Command
from controller.mqtt.bridge import MqttBridge
from controller.runtime import Runtime
from controller.services.commands import LEASE
from controller.testing.seed import Seeded
from tests.controller.support import ScriptedLocker, start_deposit


class Broker:
    """Confirms every publish except those on ``failing`` topics."""

    def __init__(self, failing: set[str], error: Exception | None = None) -> None:
        self.failing = failing
        self.error = error or aiomqtt.MqttError("Operation timed out")
        self.confirmed: list[str] = []

    async def publish(self, topic: str, payload: bytes, qos: int) -> None:
        if topic in self.failing:
            raise self.error
        self.confirmed.append(topic)


def bridge_of(runtime: Runtime) -> MqttBridge:
    assert runtime.bridge is not None
    return runtime.bridge


async def test_unconfirmed_publishes_are_counted_and_reported(runtime: Runtime) -> None:
    bridge = bridge_of(runtime)
    broker = Broker({"b"})
    messages = [("a", b"1"), ("b", b"2"), ("c", b"3")]
    sent = await bridge._publish(broker, messages, "acks")  # type: ignore[arg-type]
    assert sent == [True, False, True]
    assert broker.confirmed == ["a", "c"]
    assert bridge.stats.publish_failures == 1


async def test_a_bug_is_not_swallowed(runtime: Runtime) -> None:
    broker = Broker({"a"}, ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        await bridge_of(runtime)._publish(broker, [("a", b"1")], "acks")  # type: ignore[arg-type]


async def test_an_unconfirmed_command_is_not_recorded_sent_and_goes_out_again(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker, clock: ManualClock
) -> None:
    started = await start_deposit(runtime, seeded, locker.locker_id, "SF7000000001", "13700000001")
    bridge = bridge_of(runtime)
    due = await bridge.dispatcher.claim_due()
    assert [c.command_id for c in due] == [started.command_id]
    await bridge._publish_commands(Broker({due[0].topic}), due)  # type: ignore[arg-type]
    async with runtime.db.reader() as session:
        row = await session.get(Command, started.command_id)
        assert row is not None and (row.state, row.attempts) == ("pending", 0)
    assert await bridge.dispatcher.claim_due() == [], "leased until the lease runs out"
    clock.advance(seconds=LEASE.total_seconds() + 1)
    again = await bridge.dispatcher.claim_due()
    assert [(c.command_id, c.payload) for c in again] == [(started.command_id, due[0].payload)]
