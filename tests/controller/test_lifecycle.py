"""The rest of the parcel lifecycle on a manual clock: expiry and return, outage credit,
abandoned reservations, agents collecting for villagers, outbound produce, command retries
and expiry, and the SMS outbox."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from controller.clock import ManualClock, to_ms
from controller.db.models import Command, Notification, Parcel
from controller.domain.errors import LockedOut, NotAllowed, WrongCode
from controller.runtime import Runtime
from controller.services.agents import OutboundBooking
from controller.services.deposits import DepositRequest
from controller.services.views import DepositStarted
from controller.testing.seed import Seeded
from protocol.codes import code_hash
from protocol.messages import (
    Action,
    CompartmentState,
    DoorCause,
    DoorClosed,
    DoorOpened,
    DoorState,
    LockState,
    Outcome,
    Pickup,
    PresenceState,
    RefusalReason,
    ResultStatus,
    SizeClass,
    TemperatureClass,
)
from protocol.topics import Channel
from tests.controller.support import LAYOUT, RecordingSender, ScriptedLocker, actor, start_deposit


async def deposited(
    runtime: Runtime,
    seeded: Seeded,
    locker: ScriptedLocker,
    tracking: str,
    phone: str = "13600000001",
    village: int | None = None,
) -> DepositStarted:
    courier = await actor(runtime, seeded, "courier")
    started = await runtime.services.deposits.start(
        courier,
        DepositRequest(
            tracking,
            locker.locker_id,
            SizeClass.S,
            TemperatureClass.AMBIENT,
            phone,
            village_site_id=village,
            consent_method="in_person",
        ),
    )
    label = started.parcel.compartment
    assert label is not None
    await locker.send(
        locker.event(DoorOpened(label, DoorCause.COMMAND, started.command_id)),
        locker.event(DoorClosed(label, True, 3000)),
    )
    return started


async def parcel_row(runtime: Runtime, parcel_id: int) -> Parcel:
    async with runtime.db.reader() as session:
        parcel = await session.get(Parcel, parcel_id)
        assert parcel is not None
        return parcel


async def test_expired_parcel_goes_back_to_the_carrier(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker, clock: ManualClock
) -> None:
    started = await deposited(runtime, seeded, locker, "SF4000000001")
    clock.advance(hours=71)
    assert (await runtime.services.housekeeping.run_once())["expired"] == 0
    clock.advance(hours=2)
    assert (await runtime.services.housekeeping.run_once())["expired"] == 1
    assert (await parcel_row(runtime, started.parcel.id)).state == "expired"
    courier = await actor(runtime, seeded, "courier")
    collecting = await runtime.services.deposits.collect(courier, started.parcel.id)
    label = collecting.parcel.compartment
    assert label is not None and collecting.command_id is not None
    async with runtime.db.reader() as session:
        command = await session.get(Command, collecting.command_id)
        assert command is not None and command.args["purpose"] == "return_to_carrier"
    await locker.send(
        locker.event(DoorOpened(label, DoorCause.COMMAND, collecting.command_id)),
        locker.event(DoorClosed(label, False, 2000)),
    )
    assert (await parcel_row(runtime, started.parcel.id)).state == "returned"


async def test_outage_moves_the_deadline_and_pauses_expiry(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker, clock: ManualClock
) -> None:
    started = await deposited(runtime, seeded, locker, "SF4000000002")
    deadline = (await parcel_row(runtime, started.parcel.id)).deadline_at
    assert deadline is not None
    clock.advance(hours=60)
    await locker.send(locker.presence(PresenceState.OFFLINE))
    clock.advance(hours=20)  # past the original deadline, but the locker is offline
    assert (await runtime.services.housekeeping.run_once())["expired"] == 0
    locker.connection += 1
    await locker.send(locker.presence(PresenceState.ONLINE))
    parcel = await parcel_row(runtime, started.parcel.id)
    assert parcel.state == "notified"
    assert parcel.deadline_at is not None
    assert (parcel.deadline_at - deadline).total_seconds() == pytest.approx(12 * 3600, abs=2)
    assert parcel.offline_credit_s == pytest.approx(12 * 3600, abs=2)
    async with runtime.db.reader() as session:
        syncs = (
            await session.scalars(
                select(Command).where(Command.action == "sync_codes").order_by(Command.counter)
            )
        ).all()
    assert syncs[-1].args["add"][0]["expires_at"] == to_ms(parcel.deadline_at), (
        "the locker's cache learns the new deadline"
    )


async def test_an_abandoned_reservation_is_released(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker, clock: ManualClock
) -> None:
    started = await start_deposit(runtime, seeded, locker.locker_id, "SF4000000003", "13600000003")
    clock.advance(minutes=31)
    assert (await runtime.services.housekeeping.run_once())["reservations_released"] == 0, (
        "not while its open command is still under way"
    )
    dispatcher = runtime.bridge.dispatcher  # type: ignore[union-attr]
    assert await dispatcher.claim_due() == [], "an expired command is given up, not sent"
    async with runtime.db.reader() as session:
        command = await session.get(Command, started.command_id)
        assert command is not None and command.state == "expired"
    assert (await runtime.services.housekeeping.run_once())["reservations_released"] == 1
    assert (await parcel_row(runtime, started.parcel.id)).state == "cancelled"


async def test_agent_collects_with_the_villagers_code_and_wrong_codes_lock_out(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker, clock: ManualClock,
    sms: RecordingSender,
) -> None:  # fmt: skip
    agent = await actor(runtime, seeded, "agent")
    village = sorted(agent.village_ids)[0]
    started = await deposited(runtime, seeded, locker, "SF4000000004", "13600000004", village)
    await runtime.notifier.run_once()
    code = sms.code_for("13600000004")
    waiting = await runtime.services.agents.waiting(agent)
    assert [p.id for p in waiting] == [started.parcel.id]
    wrong = "000001" if code != "000001" else "000002"
    for left in (4, 3, 2, 1):
        with pytest.raises(WrongCode) as failure:
            await runtime.services.agents.collect(
                agent, started.parcel.id, code=wrong, standing=False
            )
        assert failure.value.attempts_left == left
    with pytest.raises(LockedOut):
        await runtime.services.agents.collect(agent, started.parcel.id, code=wrong, standing=False)
    with pytest.raises(LockedOut):  # even the right code waits out the lockout
        await runtime.services.agents.collect(agent, started.parcel.id, code=code, standing=False)
    clock.advance(minutes=2)
    view = await runtime.services.agents.collect(
        agent, started.parcel.id, code=code, standing=False
    )
    assert view.last_command is not None and view.open_purpose == "agent_pickup"
    label = view.compartment
    assert label is not None
    await locker.send(
        locker.event(DoorOpened(label, DoorCause.COMMAND, view.last_command.id)),
        locker.event(DoorClosed(label, False, 2000)),
    )
    parcel = await parcel_row(runtime, started.parcel.id)
    assert parcel.state == "picked_up" and parcel.picked_up_via == "agent"
    assert parcel.picked_up_by_user_id == agent.user_id


async def test_agents_need_authorisation_and_their_own_villages(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker
) -> None:
    agent = await actor(runtime, seeded, "agent")
    outside = next(v for v in seeded.village_ids if v not in agent.village_ids)
    theirs = sorted(agent.village_ids)[0]
    foreign = await deposited(runtime, seeded, locker, "SF4000000005", "13600000005", outside)
    with pytest.raises(Exception, match="no parcel"):
        await runtime.services.agents.collect(agent, foreign.parcel.id, code=None, standing=True)
    own = await deposited(runtime, seeded, locker, "SF4000000006", "13600000006", theirs)
    with pytest.raises(NotAllowed):
        await runtime.services.agents.collect(agent, own.parcel.id, code=None, standing=True)
    await runtime.services.agents.authorise(agent, "13600000006", "written")
    view = await runtime.services.agents.collect(agent, own.parcel.id, code=None, standing=True)
    assert view.open_purpose == "agent_pickup"


async def test_outbound_produce_is_dropped_off_and_collected(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker, sms: RecordingSender
) -> None:
    agent = await actor(runtime, seeded, "agent")
    booking = await runtime.services.agents.book_outbound(
        agent,
        OutboundBooking(
            "sf",
            "13600000007",
            locker.locker_id,
            SizeClass.M,
            TemperatureClass.CHILLED,
            reference="CHERRY-0001",
        ),
    )
    assert booking.state == "booked" and booking.compartment == "R01", "cherries go chilled"
    await runtime.notifier.run_once()
    code = sms.code_for("13600000007")
    hashed = code_hash(runtime.ctx.keys.code_key(locker.locker_id, 1), locker.locker_id, code)
    await locker.send(
        locker.event(Pickup("R01", hashed, booking.ref, False)),
        locker.event(DoorOpened("R01", DoorCause.KEYPAD, code_hash=hashed)),
        locker.event(DoorClosed("R01", True, 20_000)),
    )
    assert (await parcel_row(runtime, booking.id)).state == "dropped_off"
    courier = await actor(runtime, seeded, "courier")
    collecting = await runtime.services.deposits.collect(courier, booking.id)
    await locker.send(
        locker.event(DoorOpened("R01", DoorCause.COMMAND, collecting.command_id)),
        locker.event(DoorClosed("R01", False, 5000)),
    )
    assert (await parcel_row(runtime, booking.id)).state == "collected"


async def test_commands_are_retried_until_answered_or_expired(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker, clock: ManualClock
) -> None:
    started = await start_deposit(runtime, seeded, locker.locker_id, "SF4000000008", "13600000008")
    dispatcher = runtime.bridge.dispatcher  # type: ignore[union-attr]
    first = await dispatcher.claim_due()
    assert [c.command_id for c in first] == [started.command_id]
    await dispatcher.record_sent([str(started.command_id)])
    assert await dispatcher.claim_due() == [], "not again before the retry delay"
    clock.advance(seconds=runtime.settings.command_retry_initial_s + 0.1)
    again = await dispatcher.claim_due()
    assert [c.payload for c in again] == [first[0].payload], "every attempt is the same bytes"
    await dispatcher.record_sent([str(started.command_id)])
    replayed = locker.result(
        started.command_id,
        ResultStatus.REFUSED,
        action=Action.OPEN_COMPARTMENT,
        reason=RefusalReason.REPLAYED,
    )
    await locker.send(replayed)
    async with runtime.db.reader() as session:
        row = await session.get(Command, started.command_id)
        assert row is not None and row.state == "sent", "a 'replayed' refusal settles nothing"
    clock.advance(seconds=runtime.settings.open_command_ttl_s + 1)
    assert await dispatcher.claim_due() == []
    async with runtime.db.reader() as session:
        row = await session.get(Command, started.command_id)
        assert row is not None and row.state == "expired" and row.attempts == 2
    late = locker.result(
        started.command_id, ResultStatus.OK, action=Action.OPEN_COMPARTMENT, outcome=Outcome.OPENED
    )
    await locker.send(late)
    async with runtime.db.reader() as session:
        row = await session.get(Command, started.command_id)
        assert row is not None and row.state == "succeeded", "a late result tells the truth"


class FlakySender(RecordingSender):
    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    async def send(self, to: str, body: str) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("SMS gateway down")
        await super().send(to, body)


async def test_texts_are_retried_and_redacted_once_sent(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker, clock: ManualClock
) -> None:
    flaky = FlakySender()
    runtime.notifier.sender = flaky
    await deposited(runtime, seeded, locker, "SF4000000009", "13600000009")
    assert await runtime.notifier.run_once() == 0
    async with runtime.db.reader() as session:
        row = (await session.scalars(select(Notification))).one()
        assert row.state == "pending" and "SMS gateway down" in (row.last_error or "")
    clock.advance(seconds=3)
    assert await runtime.notifier.run_once() == 1
    code = flaky.code_for("13600000009")
    async with runtime.db.reader() as session:
        row = (await session.scalars(select(Notification))).one()
        assert row.state == "sent" and code not in row.body and row.body.count("*") >= 4


async def test_a_retried_remote_opening_opens_the_door_once(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker, clock: ManualClock
) -> None:
    started = await deposited(runtime, seeded, locker, "SF4000000010")
    clock.advance(hours=73)
    await runtime.services.housekeeping.run_once()
    courier = await actor(runtime, seeded, "courier")
    first = await runtime.services.deposits.collect(courier, started.parcel.id)
    again = await runtime.services.deposits.collect(courier, started.parcel.id)
    assert first.command_id == again.command_id, "the retry gets the opening under way"
    agent = await actor(runtime, seeded, "agent")
    village = sorted(agent.village_ids)[0]
    own = await deposited(runtime, seeded, locker, "SF4000000011", "13600000011", village)
    await runtime.services.agents.authorise(agent, "13600000011", "written")
    one = await runtime.services.agents.collect(agent, own.parcel.id, code=None, standing=True)
    two = await runtime.services.agents.collect(agent, own.parcel.id, code=None, standing=True)
    assert one.last_command is not None and two.last_command is not None
    assert one.last_command.id == two.last_command.id
    async with runtime.db.reader() as session:
        opens = (await session.scalars(
            select(Command.parcel_id).where(Command.action == "open_compartment",
                                            Command.purpose != "deposit")
        )).all()  # fmt: skip
    assert sorted(p for p in opens if p is not None) == sorted([started.parcel.id, own.parcel.id])


class LosingPublisher:
    """A bridge that says it is connected and loses every publish (the connection dropping
    between the commit and the publish)."""

    def __init__(self) -> None:
        self.lost: list[tuple[str, bytes]] = []

    def ready(self) -> bool:
        return True

    def publish_commands(self, messages: list[tuple[str, bytes]]) -> None:
        self.lost.extend(messages)


async def test_an_opening_published_at_commit_and_lost_is_retried_with_the_same_bytes(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker, clock: ManualClock
) -> None:
    """With the broker connected, the deposit's opening is stored as sent once and handed to
    the bridge after the commit, not to the dispatcher. If that publish is lost, the
    dispatcher sends the very same bytes at the first retry."""
    publisher = LosingPublisher()
    runtime.ctx.publisher = publisher
    wakes: list[None] = []
    runtime.ctx.wake_dispatcher = lambda: wakes.append(None)
    started = await start_deposit(runtime, seeded, locker.locker_id, "SF4000000010", "13600000010")
    topic = runtime.ctx.topics.locker(locker.locker_id, Channel.COMMAND)
    assert [t for t, _ in publisher.lost] == [topic]
    assert wakes == [], "nothing was left for the dispatcher, so it is not woken"
    async with runtime.db.reader() as session:
        row = await session.get(Command, started.command_id)
        assert row is not None and (row.state, row.attempts) == ("sent", 1)
    dispatcher = runtime.bridge.dispatcher  # type: ignore[union-attr]
    assert await dispatcher.claim_due() == [], "the dispatcher leaves it to the retry"
    clock.advance(seconds=runtime.settings.command_retry_initial_s + 0.1)
    again = await dispatcher.claim_due()
    assert [(c.command_id, c.payload) for c in again] == [
        (started.command_id, publisher.lost[0][1])
    ]
    # The door events' batch stores the code sync as sent too, for the bridge to publish.
    label = started.parcel.compartment
    assert label is not None
    report = await locker.send(
        locker.event(DoorOpened(label, DoorCause.COMMAND, started.command_id)),
        locker.event(DoorClosed(label, True, 3000)),
    )
    async with runtime.db.reader() as session:
        sync = (await session.scalars(select(Command).where(Command.action == "sync_codes"))).one()
    assert [o.command_id for o in report.at_commit.outgoing] == [sync.id]
    assert (sync.state, sync.attempts) == ("sent", 1)
    assert not report.at_commit.dispatcher_needed()


class OfflinePublisher:
    """A bridge that has lost the broker: nothing can be published at commit."""

    def ready(self) -> bool:
        return False

    def publish_commands(self, messages: list[tuple[str, bytes]]) -> None:
        raise AssertionError("nothing is published while the broker is away")


async def test_the_dispatcher_is_woken_for_commands_left_to_it_and_for_a_locker_back_online(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker
) -> None:
    """An opening the bridge could not take at commit stays pending and wakes the
    dispatcher; so does a locker coming back online, whose open commands are due at once."""
    runtime.ctx.publisher = OfflinePublisher()
    wakes: list[None] = []
    runtime.ctx.wake_dispatcher = lambda: wakes.append(None)
    started = await start_deposit(runtime, seeded, locker.locker_id, "SF4000000012", "13600000012")
    async with runtime.db.reader() as session:
        row = await session.get(Command, started.command_id)
        assert row is not None and (row.state, row.attempts) == ("pending", 0)
    assert wakes == [None]
    await locker.send(locker.presence(PresenceState.OFFLINE))
    report = await locker.send(locker.presence(PresenceState.ONLINE))
    assert report.at_commit.resent and report.at_commit.dispatcher_needed()
    # With nothing open for the locker, coming back leaves the dispatcher asleep.
    async with runtime.db.sessions.begin() as session:
        row = await session.get(Command, started.command_id)
        assert row is not None
        row.state = "cancelled"
    await locker.send(locker.presence(PresenceState.OFFLINE))
    report = await locker.send(locker.presence(PresenceState.ONLINE))
    assert not report.at_commit.resent and not report.at_commit.dispatcher_needed()


async def test_a_full_code_sync_a_birth_asks_for_is_published_at_the_batch_commit(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker
) -> None:
    """A locker whose birth reports another code cache version gets a full sync: the batch
    stores its pages as sent once and hands them to the bridge (not the dispatcher), as a
    reconnect storm needs for thousands of lockers at once."""
    await deposited(runtime, seeded, locker, "SF4000000011")  # one active code to sync
    publisher = LosingPublisher()
    runtime.ctx.publisher = publisher
    states = [
        CompartmentState(label, size, temp, DoorState.CLOSED, LockState.LOCKED, False, True)
        for label, size, temp in LAYOUT
    ]
    report = await locker.send(locker.birth(states, cache_version=7))
    async with runtime.db.reader() as session:
        syncs = (await session.scalars(select(Command).where(Command.action == "sync_codes"))).all()
    full = [c for c in syncs if c.args["mode"] == "full"]
    assert full, "the birth asked for a full sync"
    assert sorted(o.command_id for o in report.at_commit.outgoing) == sorted(c.id for c in full)
    assert {(c.state, c.attempts) for c in full} == {("sent", 1)}
