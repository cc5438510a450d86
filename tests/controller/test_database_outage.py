"""The database goes away under a running controller, and comes back.

The controller reaches PostgreSQL through a proxy (:mod:`tests.dbproxy`) that can cut the line
(every connection closed, new ones refused), fall silent (nothing closed, nothing answered: a
network partition), or through which the test finds the controller's own sessions to terminate
them as a PostgreSQL restart does. Everything else is real: the broker, the bridge, the
background loops, the HTTP API.

What must still hold afterwards: nothing a locker sent is acknowledged before it is stored, and
all of it is stored exactly once and acknowledged once the database is back; couriers and agents
get a clear, retryable 503 meanwhile, and the first request after the outage succeeds; a
request cut off half-way leaves nothing half-written; ``/readyz`` says not ready until the
database is back; the ingest, the dispatcher and housekeeping carry on by themselves.

PostgreSQL only: a SQLite database is a file inside the process, it does not go away this way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiomqtt
import httpx
import pytest
from sqlalchemy import func, insert, select, text

from controller.api.app import create_app
from controller.clock import ManualClock
from controller.db.engine import Timeouts, open_database
from controller.db.models import AuditEntry, Command, DeviceMessage, Parcel, Recipient
from controller.db.outage import DatabaseUnavailable, is_outage
from controller.db.session import Database
from controller.runtime import Runtime, build_runtime
from controller.services.ingest import GAP_GRACE
from controller.testing.seed import Seeded, seed_county
from controller.testing.waiting import eventually
from protocol.auth import check_ack
from protocol.codec import decode_controller_message, encode
from protocol.messages import Command as CommandMessage
from protocol.messages import DoorClosed, RequestRebirth
from protocol.topics import Channel
from protocol.urls import BrokerAddress
from tests.controller.conftest import controller_settings
from tests.controller.support import (
    LAYOUT,
    RecordingSender,
    ScriptedLocker,
    auth,
    deposit_body,
)
from tests.dbproxy import DatabaseProxy

pytestmark = [pytest.mark.mqtt]


@pytest.fixture
async def proxy(migrated_url: str) -> AsyncIterator[DatabaseProxy]:
    if not migrated_url.startswith("postgresql"):
        pytest.skip("SQLite is a file inside the process: it does not go away over a network")
    line = DatabaseProxy.for_url(migrated_url)
    await line.start()
    try:
        yield line
    finally:
        await line.close()


@pytest.fixture
async def direct(migrated_url: str) -> AsyncIterator[Database]:
    """The test's own way to PostgreSQL, past the proxy: to look at what was stored, to hold
    locks, and to terminate the controller's sessions."""
    db = open_database(migrated_url)
    try:
        yield db
    finally:
        await db.dispose()


@dataclass
class Fleet:
    """A running controller whose database is behind the proxy, with one online locker."""

    runtime: Runtime
    seeded: Seeded
    locker: ScriptedLocker
    proxy: DatabaseProxy
    direct: Database
    api: httpx.AsyncClient

    @property
    def locker_id(self) -> str:
        return self.locker.locker_id

    async def backends(self, *, waiting_on_a_lock: bool = False) -> list[int]:
        """The controller's PostgreSQL sessions (their pids), or those waiting on a lock."""
        ports = sorted(self.proxy.upstream_ports())
        query = "SELECT pid FROM pg_stat_activity WHERE client_port = ANY(:ports)"
        if waiting_on_a_lock:
            query += " AND wait_event_type = 'Lock'"
        async with self.direct.engine.connect() as connection:
            return list((await connection.execute(text(query), {"ports": ports})).scalars())

    async def terminate_backends(self) -> int:
        """What a PostgreSQL restart does to the controller's sessions (and only to them)."""
        pids = await self.backends()
        async with self.direct.engine.connect() as connection:
            for pid in pids:
                await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        return len(pids)

    async def gone(self, pids: list[int]) -> bool:
        async with self.direct.engine.connect() as connection:
            alive = await connection.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                {"pids": pids},
            )
        return bool(alive == 0)

    @contextlib.asynccontextmanager
    async def phone_being_added(self, phone: str) -> AsyncIterator[None]:
        """Another session adding a recipient with ``phone``, not yet committed: a deposit
        for that phone waits for it while *executing* its own insert (after it has locked the
        locker's row), and goes on when this one rolls back at the end of the block."""
        async with self.direct.engine.connect() as connection:
            transaction = await connection.begin()
            await connection.execute(
                insert(Recipient).values(phone=phone, created_at=datetime.now(UTC))
            )
            try:
                yield
            finally:
                await transaction.rollback()

    @contextlib.asynccontextmanager
    async def lock_held(self, table: str) -> AsyncIterator[None]:
        """Another session holding ``table`` so that the controller's writes to it wait: a
        transaction of the controller's, stopped half-way, for the outage to hit."""
        async with self.direct.engine.begin() as connection:
            await connection.execute(text(f"LOCK TABLE {table} IN EXCLUSIVE MODE"))
            yield


@dataclass
class FleetParts:
    proxy: DatabaseProxy
    direct: Database
    migrated_url: str
    topic_root: str
    mqtt_broker: BrokerAddress
    clock: ManualClock
    sms: RecordingSender


@pytest.fixture
def parts(
    proxy: DatabaseProxy,
    direct: Database,
    migrated_url: str,
    topic_root: str,
    mqtt_broker: BrokerAddress,
    clock: ManualClock,
    sms: RecordingSender,
) -> FleetParts:
    return FleetParts(proxy, direct, migrated_url, topic_root, mqtt_broker, clock, sms)


@pytest.fixture
async def fleet(parts: FleetParts) -> AsyncIterator[Fleet]:
    async with running_fleet(parts) as running:
        yield running


SILENCE = {
    "database_connect_timeout_s": 2.0,
    "database_statement_timeout_s": 5.0,
    "database_idle_in_transaction_timeout_s": 2.0,
}
"""Short limits on a silent database, for the tests of one (the statement's long enough for a
slow machine to see a deposit stop half-way before it times out)."""


@pytest.fixture
async def silent_fleet(parts: FleetParts) -> AsyncIterator[Fleet]:
    """A fleet whose controller gives a silent database 5 s a statement, 2 s a connect and
    2 s an idle transaction."""
    async with running_fleet(parts, **SILENCE) as running:
        yield running


@contextlib.asynccontextmanager
async def running_fleet(parts: FleetParts, **overrides: float) -> AsyncIterator[Fleet]:
    proxy, direct, clock, sms = parts.proxy, parts.direct, parts.clock, parts.sms
    settings = controller_settings(
        proxy.url_for(parts.migrated_url), parts.topic_root, parts.mqtt_broker
    ).model_copy(update=overrides)
    runtime = build_runtime(settings, clock=clock, sender=sms)
    try:
        seeded = await seed_county(runtime, lockers=1, prefix=f"D{uuid.uuid4().hex[:6]}")
        locker = ScriptedLocker(runtime, next(iter(seeded.lockers)))
        await locker.come_online(LAYOUT)
        await runtime.start()
        bridge = runtime.bridge
        assert bridge is not None
        await eventually(lambda: bridge.stats.connected, what="the bridge connected")
        transport = httpx.ASGITransport(app=create_app(runtime=runtime, start=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
            yield Fleet(runtime, seeded, locker, proxy, direct, api)
    finally:
        await runtime.stop()


@dataclass
class Device:
    """The locker's side of the broker: what it publishes, the acks and commands it gets."""

    client: aiomqtt.Client
    scripted: ScriptedLocker
    key: bytes
    acked: set[int] = field(default_factory=set)
    commands: list[CommandMessage] = field(default_factory=list)

    async def publish_events(self, count: int) -> list[int]:
        """``count`` door events; their sequence numbers."""
        seqs = []
        for n in range(count):
            event = self.scripted.event(DoorClosed("A01", False, n))
            await self.client.publish(self.scripted.topic(event), encode(event), qos=1)
            seqs.append(event.seq)
        return seqs

    async def listen(self) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            async for message in self.client.messages:
                assert isinstance(message.payload, bytes)
                if message.topic.value.endswith(f"/{Channel.ACK.value}"):
                    ack = check_ack(
                        message.payload, locker_id=self.scripted.locker_id, key=self.key
                    )
                    assert ack is not None, "every ack is signed with the locker's key"
                    for r in ack.ranges:
                        self.acked.update(range(r.first, r.last + 1))
                else:
                    command = decode_controller_message(message.payload)
                    assert isinstance(command, CommandMessage)
                    self.commands.append(command)


@pytest.fixture
async def device(fleet: Fleet, mqtt_broker: BrokerAddress) -> AsyncIterator[Device]:
    async with connected_device(fleet, mqtt_broker) as connected:
        yield connected


@contextlib.asynccontextmanager
async def connected_device(fleet: Fleet, mqtt_broker: BrokerAddress) -> AsyncIterator[Device]:
    topics = fleet.runtime.ctx.topics
    key = fleet.runtime.ctx.keys.command_key(fleet.locker_id, 1)
    async with aiomqtt.Client(
        mqtt_broker.host, mqtt_broker.port, username=mqtt_broker.username,
        password=mqtt_broker.password, identifier=f"locker-{fleet.locker_id}",
    ) as client:  # fmt: skip
        for channel in (Channel.ACK, Channel.COMMAND):
            await client.subscribe(topics.locker(fleet.locker_id, channel), qos=1)
        device = Device(client, fleet.locker, key)
        listening = asyncio.create_task(device.listen())
        try:
            yield device
        finally:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening


async def stored_seqs(fleet: Fleet, seqs: list[int]) -> list[int]:
    """The sequence numbers among ``seqs`` stored for the locker, one entry per row."""
    async with fleet.direct.reader() as session:
        rows = await session.scalars(
            select(DeviceMessage.seq).where(
                DeviceMessage.locker_id == fleet.locker_id, DeviceMessage.seq.in_(seqs)
            )
        )
        return sorted(rows)


def logged(caplog: pytest.LogCaptureFixture, logger: str, words: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger and words in r.getMessage()]


# --- the ingest -------------------------------------------------------------------------------


async def test_events_sent_while_the_database_is_away_are_acknowledged_only_once_stored(
    fleet: Fleet, device: Device, caplog: pytest.LogCaptureFixture
) -> None:
    bridge = fleet.runtime.bridge
    assert bridge is not None
    received = bridge.stats.received
    # The line is cut under a batch half-way through its transaction (waiting for a lock)...
    async with fleet.lock_held("device_messages"):
        first = await device.publish_events(20)
        await eventually(
            lambda: fleet.backends(waiting_on_a_lock=True), what="a batch half-way through"
        )
        await fleet.proxy.cut()
    # ...and the lockers keep sending while the database is away.
    second = await device.publish_events(20)
    await eventually(lambda: bridge.stats.received >= received + 40, what="all 40 received")
    await eventually(
        lambda: len(logged(caplog, "lockerfleet.bridge", "database unavailable")) >= 2,
        what="the batch cut off, then retried against a refused connection",
    )
    await asyncio.sleep(0.3)  # for any ack that should not be on its way
    assert device.acked.isdisjoint(first + second), "nothing is acknowledged while it is away"

    await fleet.proxy.restore()
    await eventually(lambda: device.acked >= set(first + second), what="every event acknowledged")
    assert await stored_seqs(fleet, first + second) == sorted(first + second), "each stored once"
    assert bridge.stats.connected, "the bridge stayed connected throughout"
    later = await device.publish_events(5)
    await eventually(lambda: device.acked >= set(later), what="later events acknowledged")
    assert await stored_seqs(fleet, later) == later, "the ingest carries on after the outage"
    assert not logged(caplog, "lockerfleet.bridge", "could not be stored"), "no message dropped"


async def test_a_lone_event_whose_session_is_terminated_is_stored_and_acknowledged(
    fleet: Fleet, device: Device, caplog: pytest.LogCaptureFixture
) -> None:
    """A PostgreSQL restart ends the controller's sessions mid-transaction: the batch in
    flight is the database's failure, not the message's. It is stored on the next try and
    acknowledged, without waiting for the locker to send it again."""
    async with fleet.lock_held("device_messages"):
        (seq,) = await device.publish_events(1)
        await eventually(
            lambda: fleet.backends(waiting_on_a_lock=True), what="the batch half-way through"
        )
        assert await fleet.terminate_backends() >= 1
    await eventually(lambda: seq in device.acked, within=10, what="the event acknowledged")
    assert await stored_seqs(fleet, [seq]) == [seq], "stored exactly once"
    assert not logged(caplog, "lockerfleet.bridge", "could not be stored"), "not taken for a bug"


# --- the API ----------------------------------------------------------------------------------


def assert_unavailable(response: httpx.Response) -> None:
    """The answer while the database is away: retryable, and saying so to people."""
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "database_unavailable"
    assert "try again" in error["message"]
    assert int(response.headers["Retry-After"]) == error["retry_after_s"] > 0


async def parcels_of(fleet: Fleet, tracking: str) -> list[Parcel]:
    async with fleet.direct.reader() as session:
        return list(await session.scalars(select(Parcel).where(Parcel.tracking_number == tracking)))


async def nothing_written_for(fleet: Fleet, tracking: str) -> None:
    """No parcel, so no compartment reserved; no door command, no audit of one."""
    assert await parcels_of(fleet, tracking) == []
    async with fleet.direct.reader() as session:
        commands = await session.scalar(
            select(func.count()).select_from(Command).where(Command.locker_id == fleet.locker_id)
            .where(Command.purpose == "deposit")
        )  # fmt: skip
        audited = await session.scalar(
            select(func.count()).select_from(AuditEntry)
            .where(AuditEntry.locker_id == fleet.locker_id, AuditEntry.action == "open_requested")
        )  # fmt: skip
    assert (commands, audited) == (0, 0)


async def test_couriers_and_agents_are_told_to_retry_while_the_database_is_away(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    courier = auth(fleet.seeded, "courier") | {"Idempotency-Key": "dbdown-1"}
    body = deposit_body(fleet.locker_id, "SF3000000001")
    await fleet.proxy.cut()

    assert_unavailable(await fleet.api.post("/api/v1/deposits", json=body, headers=courier))
    agent = auth(fleet.seeded, "agent")
    assert_unavailable(await fleet.api.get("/api/v1/agent/occupancy", headers=agent))
    warnings = logged(caplog, "lockerfleet.api", "database unavailable")
    assert len(warnings) == 2, "one line per refused request"
    assert all(r.levelno == logging.WARNING and not r.exc_info for r in warnings), "no traceback"

    await fleet.proxy.restore()
    await nothing_written_for(fleet, "SF3000000001")
    # Allowed: one attempt. The first request after the outage succeeds.
    retried = await fleet.api.post("/api/v1/deposits", json=body, headers=courier)
    assert retried.status_code == 201, retried.text
    assert len(await parcels_of(fleet, "SF3000000001")) == 1
    assert (await fleet.api.get("/api/v1/agent/occupancy", headers=agent)).status_code == 200


@pytest.mark.parametrize("outage", ["cut", "terminated"])
async def test_a_deposit_cut_off_half_way_leaves_nothing_reserved(
    fleet: Fleet, outage: str
) -> None:
    courier = auth(fleet.seeded, "courier") | {"Idempotency-Key": "dbdown-2"}
    body = deposit_body(fleet.locker_id, "SF3000000002")
    async with fleet.lock_held("audit_log"):  # the deposit's last write, before its commit
        request = asyncio.create_task(
            fleet.api.post("/api/v1/deposits", json=body, headers=courier)
        )
        stopped = await eventually(
            lambda: fleet.backends(waiting_on_a_lock=True), what="the deposit half-way through"
        )
        if outage == "cut":
            await fleet.proxy.cut()
        else:
            await fleet.terminate_backends()
        assert_unavailable(await request)
    await eventually(lambda: fleet.gone(stopped), what="the deposit's session over")
    await nothing_written_for(fleet, "SF3000000002")

    await fleet.proxy.restore()
    # Allowed: one attempt. The same request, sent again, succeeds at once, and only once.
    retried = await fleet.api.post("/api/v1/deposits", json=body, headers=courier)
    assert retried.status_code == 201, retried.text
    (parcel,) = await parcels_of(fleet, "SF3000000002")
    assert parcel.state == "reserved" and parcel.compartment_id is not None


async def test_readyz_says_not_ready_while_the_database_is_away(fleet: Fleet) -> None:
    assert (await fleet.api.get("/readyz")).status_code == 200
    await fleet.proxy.cut()
    away = await fleet.api.get("/readyz")
    assert away.status_code == 503
    assert away.json()["ready"] is False
    assert away.json()["checks"]["database"].startswith("unreachable")
    assert away.json()["checks"]["broker"] == "ok"
    await fleet.proxy.restore()
    back = await fleet.api.get("/readyz")
    assert back.status_code == 200, back.text
    assert back.json() == {"ready": True, "checks": {"database": "ok", "broker": "ok"}}


# --- background work --------------------------------------------------------------------------


async def test_housekeeping_and_the_dispatcher_carry_on_after_the_outage(
    fleet: Fleet, device: Device, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A gap in the locker's stream left alone is housekeeping's to chase (a rebirth request),
    and the dispatcher's to send: both must work again once the database is back."""
    caplog.set_level(logging.INFO, logger="lockerfleet")
    fleet.locker.seq += 1  # one event lost on the way: a gap
    await fleet.locker.send(fleet.locker.event(DoorClosed("A01", False, 0)))

    await fleet.proxy.cut()
    await eventually(
        lambda: logged(caplog, "lockerfleet.runtime", "database unavailable"),
        what="housekeeping meeting the outage",
    )
    await eventually(
        lambda: logged(caplog, "lockerfleet.bridge", "the command dispatcher paused"),
        what="the dispatcher meeting the outage",
    )
    await asyncio.sleep(0.5)  # a few more rounds of both, still away
    for logger, who in (("lockerfleet.runtime", ""), ("lockerfleet.bridge", "dispatcher")):
        lines = [
            r for r in caplog.records
            if r.name == logger and r.levelno >= logging.WARNING and who in r.getMessage()
        ]  # fmt: skip
        assert len(lines) == 1, f"{logger}: one line for the outage, not one per round"
        assert not lines[0].exc_info, f"{logger}: and no traceback"

    await fleet.proxy.restore()
    clock.advance(seconds=GAP_GRACE.total_seconds() + 1)
    await eventually(
        lambda: any(isinstance(c.args, RequestRebirth) for c in device.commands),
        what="the rebirth requested and sent",
    )
    assert logged(caplog, "lockerfleet.runtime", "database reachable again")
    assert logged(caplog, "lockerfleet.bridge", "database reachable again")
    assert all(not t.done() for t in fleet.runtime.tasks), "no background task died"


# --- a silent database ------------------------------------------------------------------------
# A network partition or a hung server closes nothing and answers nothing: without limits of its
# own the controller would wait for TCP to give up, many minutes (the proxy, holding the
# connections open, makes that for ever).


async def test_couriers_get_a_503_not_a_hang_while_the_database_is_silent(
    silent_fleet: Fleet,
) -> None:
    fleet = silent_fleet
    courier = auth(fleet.seeded, "courier") | {"Idempotency-Key": "silent-1"}
    body = deposit_body(fleet.locker_id, "SF3000000011")
    fleet.proxy.stall()

    # Within the 5 s statement timeout (and the time to throw the connection away), not never.
    request = fleet.api.post("/api/v1/deposits", json=body, headers=courier)
    assert_unavailable(await asyncio.wait_for(request, 30))
    # Another pooled connection, or a new one that gets no greeting: a timeout either way.
    ready = await asyncio.wait_for(fleet.api.get("/readyz"), 30)
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"].startswith("unreachable")

    fleet.proxy.flow()  # what was held back arrives now, and must not have written anything
    await nothing_written_for(fleet, "SF3000000011")
    retried = await fleet.api.post("/api/v1/deposits", json=body, headers=courier)
    assert retried.status_code == 201, retried.text
    assert len(await parcels_of(fleet, "SF3000000011")) == 1
    assert (await fleet.api.get("/readyz")).status_code == 200


async def test_a_replica_cut_off_mid_deposit_holds_the_locker_only_briefly(
    silent_fleet: Fleet,
) -> None:
    """The deposit has locked the locker's row when its replica is cut off. The server, which
    sees nothing wrong with the connection, must not keep the lock for every other replica
    until TCP gives up: it ends the silent transaction (``idle_in_transaction_s``)."""
    fleet = silent_fleet
    courier = auth(fleet.seeded, "courier") | {"Idempotency-Key": "silent-2"}
    body = deposit_body(fleet.locker_id, "SF3000000012")
    # Held up at a row, not a table: a wait while PostgreSQL parses a statement (a table lock)
    # would leave the session "active", reading the rest of the client's message, which no
    # idle-in-transaction limit covers (only TCP keepalives do, on a real partition).
    async with fleet.phone_being_added(str(body["recipient_phone"])):
        request = asyncio.create_task(
            fleet.api.post("/api/v1/deposits", json=body, headers=courier)
        )
        stopped = await eventually(
            lambda: fleet.backends(waiting_on_a_lock=True), what="the deposit half-way through"
        )
        fleet.proxy.stall()
    # The deposit's insert is done on the server; its answer, and the rest, never come.
    assert_unavailable(await asyncio.wait_for(request, 30))

    # Another replica's deposit at this locker takes the locker's row lock in time.
    async with fleet.direct.engine.begin() as other_replica:
        locked = other_replica.execute(
            text("SELECT id FROM lockers WHERE id = :id FOR UPDATE"), {"id": fleet.locker_id}
        )
        assert (await asyncio.wait_for(locked, 30)).scalar() == fleet.locker_id
    await eventually(lambda: fleet.gone(stopped), what="the silent session ended by the server")

    fleet.proxy.flow()
    await nothing_written_for(fleet, "SF3000000012")
    retried = await fleet.api.post("/api/v1/deposits", json=body, headers=courier)
    assert retried.status_code == 201, retried.text
    (parcel,) = await parcels_of(fleet, "SF3000000012")
    assert parcel.state == "reserved" and parcel.compartment_id is not None


async def test_events_sent_while_the_database_is_silent_are_acknowledged_only_once_stored(
    silent_fleet: Fleet, mqtt_broker: BrokerAddress, caplog: pytest.LogCaptureFixture
) -> None:
    fleet = silent_fleet
    bridge = fleet.runtime.bridge
    assert bridge is not None
    async with connected_device(fleet, mqtt_broker) as device:
        received = bridge.stats.received
        fleet.proxy.stall()
        seqs = await device.publish_events(10)
        await eventually(lambda: bridge.stats.received >= received + 10, what="all received")
        await eventually(
            lambda: logged(caplog, "lockerfleet.bridge", "retrying a batch"),
            within=30,
            what="the batch given up on after the statement timeout, to be retried",
        )
        assert device.acked.isdisjoint(seqs), "nothing is acknowledged while it is silent"

        fleet.proxy.flow()
        await eventually(lambda: device.acked >= set(seqs), within=60, what="all acknowledged")
        assert await stored_seqs(fleet, seqs) == sorted(seqs), "each stored exactly once"
        assert not logged(caplog, "lockerfleet.bridge", "could not be stored"), "none dropped"


async def test_a_commit_left_unanswered_throws_its_connection_away(
    proxy: DatabaseProxy, migrated_url: str
) -> None:
    """COMMIT is no statement to SQLAlchemy's error hook: its timeout must still count as an
    outage and keep the connection (with a cancel perhaps still under way) out of the pool."""
    db = open_database(proxy.url_for(migrated_url), timeouts=Timeouts(connect_s=2, statement_s=1))
    try:
        connection = await db.engine.connect()
        transaction = await connection.begin()
        before = await connection.scalar(text("SELECT pg_backend_pid()"))
        proxy.stall()  # the COMMIT goes out and nothing comes back
        with pytest.raises(DatabaseUnavailable) as raised:
            await transaction.commit()
        await connection.close()
        assert is_outage(raised.value)
        proxy.flow()
        async with db.engine.connect() as connection:
            after = await connection.scalar(text("SELECT pg_backend_pid()"))
        assert after != before, "a new connection, not the one whose COMMIT went unanswered"
    finally:
        proxy.flow()
        await db.dispose()
