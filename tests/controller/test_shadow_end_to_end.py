"""Configuration shadow and credential rotation on real parts: the controller (HTTP API, MQTT
bridge, database), simulated locker firmware, and a real Mosquitto.

* A desired configuration goes out as a signed ``set_config``; the simulated locker puts it in
  force and reports it; the controller shows the locker in sync. A locker that was offline
  when the configuration changed gets it when it comes back.
* A rotation, on a Mosquitto configured from the database: after ``broker-config`` and a reload
  the old broker password is refused and the new one accepted; the locker re-provisions with
  the token; a pickup code issued before the rotation still opens its door at the keypad; a
  command signed with the old command key is refused by the locker and opens nothing.
* A revocation: the locker's password is refused after the reload until it is re-provisioned.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.clock import to_ms
from controller.embedded_broker import MosquittoProcess, free_port
from controller.runtime import Runtime, build_runtime
from controller.services.views import Credentials
from controller.testing.fleet import locker_spec
from controller.testing.http import serve_http
from controller.testing.seed import DEFAULT_LAYOUT, Seeded, seed_county
from controller.testing.waiting import eventually
from firmware_sim.faults import Fault, FaultKind
from firmware_sim.fleet import MqttFleet
from firmware_sim.people import Delays
from firmware_sim.session import FleetOptions
from firmware_sim.settings import Settings as FirmwareSettings
from protocol.auth import sign_command
from protocol.codec import encode
from protocol.messages import Command, OpenCompartment, OpenPurpose
from protocol.topics import Channel
from protocol.urls import BrokerAddress, parse_broker_url
from tests.controller.conftest import controller_settings
from tests.controller.support import RecordingSender
from tests.controller.test_end_to_end import System, fleet_for
from tests.controller.test_security_broker import (
    CONTROLLER_PASSWORD,
    Client,
    GeneratedBroker,
    generate,
)

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


@pytest.fixture
async def system(
    migrated_url: str, topic_root: str, mqtt_broker: BrokerAddress, sms: RecordingSender
) -> AsyncIterator[System]:
    runtime = build_runtime(controller_settings(migrated_url, topic_root, mqtt_broker), sender=sms)
    seeded = await seed_county(runtime, lockers=1, prefix=f"C{uuid.uuid4().hex[:6]}")
    async with serve_http(runtime, start=True) as base, httpx.AsyncClient(base_url=base) as api:
        await bridge_subscribed(runtime)
        yield System(runtime, api, seeded, sms)
    await runtime.stop()


async def bridge_subscribed(runtime: Runtime) -> None:
    """Wait for the controller's subscriptions, so the lockers' first births reach it (a
    birth it missed would come again only after the firmware's 30 s retransmission)."""
    bridge = runtime.bridge
    assert bridge is not None
    await eventually(lambda: bridge.stats.connected, what="the controller subscribed")


async def config_of(system: System, locker_id: str) -> dict[str, Any]:
    response = await system.api.get(
        f"/api/v1/lockers/{locker_id}/config", headers=system.auth("operator")
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def change_config(system: System, locker_id: str, **changes: int) -> dict[str, Any]:
    response = await system.api.patch(
        f"/api/v1/lockers/{locker_id}/config", headers=system.auth("technician"), json=changes
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def wait_in_sync(system: System, locker_id: str, version: int, within: float = 30) -> None:
    async def in_sync() -> bool:
        view = await config_of(system, locker_id)
        return bool(view["sync"] == "in_sync" and view["reported_version"] == version)

    await eventually(in_sync, within, f"{locker_id} in sync at version {version}")


async def test_desired_configuration_reaches_the_locker_also_after_an_outage(
    system: System, mqtt_broker: BrokerAddress, topic_root: str
) -> None:
    locker_id = next(iter(system.seeded.lockers))
    with fleet_for(system.seeded, mqtt_broker, topic_root) as fleet:
        await system.wait_online(locker_id)
        first = await change_config(system, locker_id, heartbeat_s=20, door_open_alarm_s=300)
        assert first["sync"] == "pending" and first["desired_version"] == 1
        await wait_in_sync(system, locker_id, 1)
        # What must hold afterwards: the locker itself runs exactly the desired settings.
        settings = fleet.view(locker_id).settings
        assert (settings.config_version, settings.heartbeat_s, settings.door_open_alarm_s) == (
            1, 20, 300,
        )  # fmt: skip
        command = (await config_of(system, locker_id))["last_command"]
        assert command["state"] == "succeeded" and command["result_outcome"] == "applied"

        # The locker drops off the network; the configuration changes while it is away.
        assert fleet.inject(locker_id, Fault(FaultKind.NETWORK_DROP, duration_ms=12_000))

        async def offline() -> bool:
            return not (await system.locker(locker_id))["online"]

        await eventually(offline, what="controller sees the locker offline")
        second = await change_config(system, locker_id, keypad_max_attempts=3)
        assert second["desired_version"] == 2 and not second["online"]
        assert fleet.view(locker_id).settings.config_version == 1, "it cannot have it yet"

        await wait_in_sync(system, locker_id, 2, within=60)
        settings = fleet.view(locker_id).settings
        # Afterwards: the new setting is in force and the earlier ones were kept.
        assert (settings.config_version, settings.keypad_max_attempts) == (2, 3)
        assert (settings.heartbeat_s, settings.door_open_alarm_s) == (20, 300)
        out_of_sync = await system.api.get(
            "/api/v1/fleet/config/out-of-sync", headers=system.auth("operator")
        )
        assert locker_id not in {v["locker_id"] for v in out_of_sync.json()}


# --- rotation on a Mosquitto configured from the database ----------------------------------


@pytest.fixture(autouse=True)
def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKERFLEET_ENVIRONMENT", "test")  # broker-config derives the tests' keys


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def locked_broker(port: int, tmp_path: Path) -> Iterator[tuple[MosquittoProcess, Path]]:
    """A Mosquitto on the configuration ``broker-config`` writes into ``out`` (written by the
    test before it starts the broker)."""
    out = tmp_path / "mosquitto"
    process = GeneratedBroker(port, workdir=out)
    yield process, out
    process.stop()


def reprovision(fleet: MqttFleet, credentials: Credentials) -> None:
    """What a locker does with re-provisioned credentials: keep them (non-volatile memory,
    pickup-code cache and all, stays), restart, and connect with them."""

    def swap() -> None:
        session = fleet.sessions[credentials.locker_id]
        locker = session.locker
        locker.spec = dataclasses.replace(
            locker.spec,
            command_key=bytes.fromhex(credentials.command_key_hex),
            code_key=bytes.fromhex(credentials.code_key_hex),
            username=credentials.mqtt_username,
            password=credentials.mqtt_password,
        )
        session.client.username_pw_set(credentials.mqtt_username, credentials.mqtt_password)
        locker.reboot()  # the fleet drops the old link for the new boot and reconnects

    fleet.run(swap)


def accepted(port: int, user: str, password: str) -> bool:
    """Whether the broker accepts ``user`` with ``password`` (the client is closed again)."""
    client = Client(port, user, password)
    if not client.connect():
        return False
    client.close()
    return True


async def test_rotation_shuts_the_old_identity_out_and_keeps_pickup_codes_working(
    migrated_url: str, topic_root: str, sms: RecordingSender, port: int,
    locked_broker: tuple[MosquittoProcess, Path],
) -> None:  # fmt: skip
    broker, out = locked_broker
    controller_url = parse_broker_url(f"mqtt://controller:{CONTROLLER_PASSWORD}@127.0.0.1:{port}")
    runtime: Runtime = build_runtime(
        controller_settings(migrated_url, topic_root, controller_url), sender=sms
    )
    seeded: Seeded = await seed_county(runtime, lockers=1, prefix=f"K{uuid.uuid4().hex[:6]}")
    locker_id = next(iter(seeded.lockers))
    old = seeded.lockers[locker_id]
    await generate(runtime, out, port)
    broker.start()
    options = FleetOptions(
        topic_root=topic_root, keepalive_s=5, reconnect_min_ms=200, reconnect_max_ms=1_000,
        settings=FirmwareSettings(heartbeat_s=5),
    )  # fmt: skip
    lockers_broker = parse_broker_url(f"mqtt://127.0.0.1:{port}")
    specs = [locker_spec(old, DEFAULT_LAYOUT)]
    try:
        async with serve_http(runtime, start=True) as base, httpx.AsyncClient(base_url=base) as api:
            system = System(runtime, api, seeded, sms)
            await bridge_subscribed(runtime)
            with MqttFleet(specs, lockers_broker, options) as fleet:
                await system.wait_online(locker_id)
                started = await system.deposit(locker_id, "SF3100000001", "13500000011")
                parcel_id = started["parcel"]["id"]
                await system.wait_parcel(parcel_id, "notified")
                code = await eventually(lambda: sms.latest_code("13500000011"), what="pickup SMS")
                await eventually(
                    lambda: fleet.view(locker_id).codes_cached == 1, what="code in the cache"
                )

                rotated = await api.post(
                    f"/api/v1/lockers/{locker_id}/credentials/rotate",
                    headers=system.auth("admin"), json={"reason": "yearly rotation"},
                )  # fmt: skip
                assert rotated.status_code == 201, rotated.text
                token = rotated.json()["provisioning_token"]["token"]
                await generate(runtime, out, port)
                broker.reload()
                await eventually(
                    lambda: not accepted(port, locker_id, old.mqtt_password),
                    within=10, what="the old broker password refused after the reload",
                )  # fmt: skip

                # Mosquitto also drops the locker's live connection at the reload (2.0.11
                # does), and the locker's reconnects with the old password are refused.
                await eventually(
                    lambda: fleet.counts["connack_refused"] > 0
                    and not fleet.view(locker_id).connected,
                    within=15, what="the live connection dropped and its reconnects refused",
                )  # fmt: skip

                redeemed = await api.post("/api/v1/provisioning/redeem", json={"token": token})
                assert redeemed.status_code == 200
                new = Credentials(**redeemed.json())
                assert new.code_key_hex == old.code_key_hex
                assert new.mqtt_password != old.mqtt_password
                assert new.command_key_hex != old.command_key_hex
                assert accepted(port, locker_id, new.mqtt_password), "the new password works"

                reprovision(fleet, new)

                def settled() -> bool:
                    view = fleet.view(locker_id)
                    return view.boot_id > 1 and view.connected and view.pending_events == 0

                # Acknowledgements signed with the new command key verify on the locker.
                await eventually(settled, within=30, what="re-provisioned locker acknowledged")
                assert fleet.view(locker_id).codes_cached == 1, "the code cache survived"

                # The code texted before the rotation still opens the door at the keypad.
                fleet.run(
                    lambda: fleet.people.recipient_picks_up(
                        fleet.lockers[locker_id], code, delays=Delays.fast()
                    )
                )
                picked = await system.wait_parcel(parcel_id, "picked_up")
                assert picked["picked_up_via"] == "keypad"

                # A command signed with the old command key is refused and opens nothing.
                await refused_with_the_old_key(runtime, fleet, port, locker_id, old)

                # Commands signed with the new key work: a configuration change gets applied.
                view = await system.api.patch(
                    f"/api/v1/lockers/{locker_id}/config",
                    headers=system.auth("technician"), json={"heartbeat_s": 15},
                )  # fmt: skip
                assert view.status_code == 200
                await wait_in_sync(system, locker_id, view.json()["desired_version"])
    finally:
        await runtime.stop()


async def refused_with_the_old_key(
    runtime: Runtime, fleet: MqttFleet, port: int, locker_id: str, old: Credentials
) -> None:
    topics = runtime.ctx.topics
    label = "C01"  # an empty, closed compartment (the parcel went into a small one)
    now = to_ms(runtime.ctx.clock.now())
    forged = sign_command(
        Command.of(
            locker_id, f"oldkey{uuid.uuid4().hex[:12]}", 10**9, now, now + 60_000,
            OpenCompartment(label, OpenPurpose.SERVICE),
        ),
        bytes.fromhex(old.command_key_hex),
    )  # fmt: skip
    spy = Client(port, "controller", CONTROLLER_PASSWORD)
    assert spy.connect()
    try:
        spy.subscribe(topics.locker(locker_id, Channel.RESULT))
        spy.publish(topics.locker(locker_id, Channel.COMMAND), encode(forged))

        while True:  # the locker's answers, until the one to the forged command (or a timeout)
            _topic, payload = await asyncio.to_thread(spy.next_message)
            result: dict[str, Any] = json.loads(payload)
            if result.get("command_id") == forged.command_id:
                break
    finally:
        spy.close()
    assert (result["status"], result["reason"]) == ("refused", "bad_signature")
    view = fleet.view(locker_id)
    assert label not in view.released and not view.compartments[label].door_open


async def test_a_revoked_locker_cannot_connect_after_the_reload_until_re_provisioned(
    runtime: Runtime, seeded: Seeded, port: int, locked_broker: tuple[MosquittoProcess, Path]
) -> None:
    broker, out = locked_broker
    locker_id, other = sorted(seeded.lockers)
    await generate(runtime, out, port)
    broker.start()
    assert accepted(port, locker_id, seeded.lockers[locker_id].mqtt_password)
    admin = await runtime.services.admin.authenticate(seeded.tokens["admin"])
    assert admin is not None
    change = await runtime.services.rotation.revoke(admin, locker_id, "board stolen")
    assert change.provisioning_token is None
    await generate(runtime, out, port)
    broker.reload()
    await eventually(
        lambda: not accepted(port, locker_id, seeded.lockers[locker_id].mqtt_password),
        within=10, what="the revoked password refused after the reload",
    )  # fmt: skip
    # What must still hold: the other locker is untouched.
    assert accepted(port, other, seeded.lockers[other].mqtt_password)
    # A technician re-provisions the locker: only the redeemed credentials get in.
    token = await runtime.services.provisioning.issue_token(admin, locker_id)
    fresh = await runtime.services.provisioning.redeem(token.token)
    assert accepted(port, locker_id, fresh.mqtt_password)
