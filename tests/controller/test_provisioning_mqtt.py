"""Provisioning over MQTT, end to end, on a real Mosquitto running the configuration that
``lockerfleet broker-config`` generates (its ACLs active), against a running controller runtime.

An unprovisioned simulated locker connects with the shared ``_provisioning`` identity, trades
its one-time token for its credentials (sealed with the token's keys), reconnects with its own
identity and runs normally. A reused, expired or decommissioned locker's token is refused over
the same path, audited, with nothing handed out. Another holder of the provisioning identity
sees only ciphertext, cannot read requests or any locker's topics, and cannot forge responses.

Negative checks never wait for something not to happen: they rely on MQTT delivering one
publisher's messages (and what the broker queues for one subscriber) in order, as in
test_security_broker.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from controller.clock import ManualClock
from controller.db.models import AuditEntry, Locker, ProvisioningToken
from controller.embedded_broker import free_port
from controller.runtime import Runtime, build_runtime
from controller.services.broker_config import PROVISIONING_USER
from controller.services.context import Actor, Role
from controller.testing.fleet import locker_spec
from controller.testing.seed import DEFAULT_LAYOUT, Seeded
from controller.testing.waiting import eventually
from firmware_sim.fleet import FleetOptions, MqttFleet
from firmware_sim.provisioning import (
    CredentialStore,
    ProvisioningRefused,
    Unprovisioned,
    provision_over_mqtt,
)
from firmware_sim.spec import LockerSpec
from protocol.codec import decode
from protocol.messages import (
    PROVISIONING_MESSAGES,
    ProvisionResponse,
    ProvisionStatus,
)
from protocol.provisioning import open_response
from protocol.urls import BrokerAddress
from tests.controller.conftest import controller_settings
from tests.controller.test_security_broker import (
    CONTROLLER_PASSWORD,
    Client,
    GeneratedBroker,
    generate,
)

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


@pytest.fixture(autouse=True)
def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKERFLEET_ENVIRONMENT", "test")  # the CLI derives the tests' keys


class Stack:
    """A broker on the generated configuration and a controller runtime started on it."""

    def __init__(self, runtime: Runtime, live: Runtime, seeded: Seeded, port: int) -> None:
        self.runtime, self.live, self.seeded, self.port = runtime, live, seeded, port
        self.root = runtime.ctx.topics.root
        self.password = runtime.ctx.keys.provisioning_password()
        self.technician = Actor(seeded.user_ids["technician"], Role.TECHNICIAN)

    @property
    def broker(self) -> BrokerAddress:
        return BrokerAddress("127.0.0.1", self.port)

    async def token(self, locker_id: str) -> str:
        issued = await self.runtime.services.provisioning.issue_token(self.technician, locker_id)
        return issued.token

    def unprovisioned(self, locker_id: str, token: str) -> Unprovisioned:
        spec = locker_spec(self.seeded.lockers[locker_id], DEFAULT_LAYOUT)
        return Unprovisioned(locker_id, token, spec.compartments)

    async def provision(self, locker: Unprovisioned, store: CredentialStore) -> LockerSpec:
        return await asyncio.to_thread(
            provision_over_mqtt, locker, self.broker, self.password, store=store,
            topic_root=self.root, timeout=30.0,
        )  # fmt: skip

    async def audit(self, action: str) -> list[AuditEntry]:
        async with self.runtime.db.reader() as session:
            return list(
                await session.scalars(
                    select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
                )
            )

    def spy(self) -> Client:
        """The controller's identity, reading every provisioning message (to see what went
        over the wire)."""
        client = Client(self.port, "controller", CONTROLLER_PASSWORD)
        assert client.connect()
        client.subscribe(f"{self.root}/provision/#")
        return client


@pytest.fixture
async def stack(
    runtime: Runtime, seeded: Seeded, migrated_url: str, clock: ManualClock, tmp_path: Path
) -> AsyncIterator[Stack]:
    port = free_port()
    out = tmp_path / "mosquitto"
    await generate(runtime, out, port)
    broker = GeneratedBroker(port, workdir=out)
    broker.start()
    address = BrokerAddress("127.0.0.1", port, "controller", CONTROLLER_PASSWORD)
    settings = controller_settings(migrated_url, runtime.ctx.topics.root, address)
    live = build_runtime(settings, clock=clock)
    await live.start()
    assert live.provisioning is not None
    await asyncio.wait_for(live.provisioning.subscribed.wait(), 20)
    try:
        yield Stack(runtime, live, seeded, port)
    finally:
        await live.stop()
        broker.stop()


async def test_an_unprovisioned_locker_gets_its_credentials_over_mqtt_and_runs(
    stack: Stack, tmp_path: Path
) -> None:
    """Afterwards: the locker holds exactly the credentials the controller derives for it, kept
    in its credential file; the token is spent; the provisioning is audited as via MQTT; the
    locker runs on its own identity and the controller sees it online."""
    locker_id = sorted(stack.seeded.lockers)[0]
    token = await stack.token(locker_id)
    store = CredentialStore(tmp_path / f"{locker_id}.credentials.json")
    spy = stack.spy()
    try:
        spec = await stack.provision(stack.unprovisioned(locker_id, token), store)
        _, request = spy.next_message()
        topic, response = spy.next_message()
    finally:
        spy.close()

    expected = stack.seeded.lockers[locker_id]
    assert spec.command_key.hex() == expected.command_key_hex
    assert spec.code_key.hex() == expected.code_key_hex
    assert (spec.username, spec.password) == (locker_id, expected.mqtt_password)
    assert store.load() is not None and (store.path is not None)
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"
    assert topic == f"{stack.root}/provision/{locker_id}/response"
    assert json.loads(request)["token"] == token
    for secret in (expected.mqtt_password, expected.command_key_hex, expected.code_key_hex):
        assert secret.encode() not in response, "the credentials travel sealed"

    async with stack.runtime.db.reader() as session:
        used = await session.scalar(select(ProvisioningToken.used_at))
    assert used is not None
    (provisioned,) = await stack.audit("provisioned")
    assert provisioned.locker_id == locker_id and provisioned.detail["via"] == "mqtt"

    with MqttFleet([spec], stack.broker, FleetOptions(topic_root=stack.root, keepalive_s=5)):

        async def online() -> bool:
            async with stack.runtime.db.reader() as session:
                locker = await session.get(Locker, locker_id, populate_existing=True)
                return locker is not None and locker.online

        await eventually(online, what=f"{locker_id} online on its own identity")


async def test_reused_and_expired_tokens_are_refused_over_mqtt_and_audited(
    stack: Stack, clock: ManualClock
) -> None:
    """Afterwards: each refused locker got an authentic refusal carrying no sealed data, its
    credential store stays empty, and every refusal is in the audit log with its reason."""
    first, second = sorted(stack.seeded.lockers)
    reused = await stack.token(first)
    await stack.provision(stack.unprovisioned(first, reused), CredentialStore())

    spy = stack.spy()
    try:
        again = CredentialStore()
        with pytest.raises(ProvisioningRefused):
            await stack.provision(stack.unprovisioned(first, reused), again)
        assert again.load() is None
        _, _request = spy.next_message()
        _, payload = spy.next_message()
        refusal = decode(payload, PROVISIONING_MESSAGES)
        assert isinstance(refusal, ProvisionResponse)
        assert refusal.status is ProvisionStatus.REFUSED and refusal.sealed is None

        expired = await stack.token(second)
        clock.advance(minutes=31)
        late = CredentialStore()
        with pytest.raises(ProvisioningRefused):
            await stack.provision(stack.unprovisioned(second, expired), late)
        assert late.load() is None
    finally:
        spy.close()

    refusals = await stack.audit("provisioning_refused")
    assert [(r.locker_id, r.detail["reason"], r.detail["via"]) for r in refusals] == [
        (first, "used", "mqtt"),
        (second, "expired", "mqtt"),
    ]
    assert len(await stack.audit("provisioned")) == 1


async def test_a_decommissioned_locker_cannot_be_provisioned_over_mqtt(stack: Stack) -> None:
    """Afterwards: the decommissioned locker got a refusal and nothing else, and the refusal is
    audited as such."""
    locker_id = sorted(stack.seeded.lockers)[0]
    token = await stack.token(locker_id)
    admin = Actor(stack.seeded.user_ids["admin"], Role.ADMIN)
    await stack.runtime.services.provisioning.decommission(admin, locker_id, "cabinet stolen")
    store = CredentialStore()
    with pytest.raises(ProvisioningRefused):
        await stack.provision(stack.unprovisioned(locker_id, token), store)
    assert store.load() is None
    (refused,) = await stack.audit("provisioning_refused")
    assert (refused.locker_id, refused.detail["reason"]) == (locker_id, "decommissioned")
    assert await stack.audit("provisioned") == []


async def test_another_holder_of_the_provisioning_identity_learns_nothing(stack: Stack) -> None:
    """Another holder of the provisioning identity reads the response but only as ciphertext it
    cannot open, never reads the request (the token), cannot forge a response, and can neither
    read nor write any locker's topics. Afterwards the victim is provisioned all the same."""
    root = stack.root
    victim = sorted(stack.seeded.lockers)[0]
    other = sorted(stack.seeded.lockers)[1]
    token = await stack.token(victim)
    eve = Client(stack.port, PROVISIONING_USER, stack.password)
    controller = stack.spy()
    assert eve.connect()
    try:
        controller.subscribe(f"{root}/locker/+/event")
        eve.subscribe(f"{root}/provision/+/request", f"{root}/provision/+/response")
        eve.subscribe(f"{root}/locker/#")

        # Writes she is not allowed are dropped: the allowed request after them arrives first.
        eve.publish(f"{root}/provision/{victim}/response", b'{"forged": true}')
        eve.publish(f"{root}/locker/{other}/event", b"forged event")
        eve.publish(f"{root}/locker/{PROVISIONING_USER}/event", b"as a locker of her name")
        eve.publish(f"{root}/provision/{other}/request", b"not a request")
        assert controller.next_message() == (
            f"{root}/provision/{other}/request",
            b"not a request",
        )

        store = CredentialStore()
        await stack.provision(stack.unprovisioned(victim, token), store)
        assert store.load() is not None

        # The broker queues the request to its readers before the controller can answer it,
        # so had she been able to read requests, the request would reach her first.
        topic, sealed = eve.next_message()
        assert topic == f"{root}/provision/{victim}/response"
        response = decode(sealed, PROVISIONING_MESSAGES)
        assert isinstance(response, ProvisionResponse) and response.status is ProvisionStatus.OK
        guess = "lfp_" + uuid.uuid4().hex
        opened = open_response(
            response, token=guess, locker_id=victim, request_id=response.request_id
        )
        assert opened is None
        for secret in (stack.seeded.lockers[victim].command_key_hex, token):
            assert secret.encode() not in sealed

        # A locker's command, published before an answer she may read, never reaches her.
        controller.publish(f"{root}/locker/{other}/cmd", b"a command")
        controller.publish(f"{root}/locker/{PROVISIONING_USER}/cmd", b"for her name")
        controller.publish(f"{root}/provision/{other}/response", b"marker")
        assert eve.next_message() == (f"{root}/provision/{other}/response", b"marker")
    finally:
        eve.close()
        controller.close()


async def test_locker_sim_provisions_the_fleet_files_token_lockers_then_runs_them(
    stack: Stack, tmp_path: Path
) -> None:
    """``locker-sim fleet`` with a fleet file whose locker has a token instead of keys.
    Afterwards: its credentials are kept in the credentials directory, it was provisioned over
    MQTT, and it ran on its own identity (the controller took its birth: the locker is active)."""
    locker_id = sorted(stack.seeded.lockers)[0]
    token = await stack.token(locker_id)
    rows = ",\n".join(
        f'  {{ id = "{c.id}", size = "{c.size.value}", temperature = "{c.temperature.value}" }}'
        for c in stack.unprovisioned(locker_id, token).compartments
    )
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        f'[[locker]]\nlocker_id = "{locker_id}"\nprovisioning_token = "{token}"\n'
        f"compartments = [\n{rows}\n]\n"
    )
    credentials = tmp_path / "credentials"
    argv = [
        "fleet", "--fleet", str(fleet), "--broker", f"mqtt://127.0.0.1:{stack.port}",
        "--topic-root", stack.root, "--provisioning-password", stack.password,
        "--credentials", str(credentials), "--duration", "3", "--no-attendant",
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "firmware_sim.cli", *argv)
    assert await process.wait() == 0
    kept = CredentialStore(credentials / f"{locker_id}.credentials.json").load()
    assert kept is not None
    assert kept.command_key == stack.seeded.lockers[locker_id].command_key_hex
    (provisioned,) = await stack.audit("provisioned")
    assert provisioned.detail["via"] == "mqtt"

    async def active() -> bool:
        async with stack.runtime.db.reader() as session:
            locker = await session.get(Locker, locker_id, populate_existing=True)
            return locker is not None and locker.status == "active"

    await eventually(active, what=f"{locker_id}'s birth taken")
