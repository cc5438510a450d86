"""Broker access control generated from the database (``lockerfleet broker-config mosquitto``),
enforced by a real Mosquitto: no anonymous access, a locker cannot publish as another locker or
read another's commands, and a decommissioned locker or an old key generation cannot connect
once the configuration is regenerated and the broker reloaded.

Negative checks never wait for something not to happen: after a forbidden message the same
client sends an allowed one, and MQTT delivers one publisher's messages to a subscriber in
order, so the allowed one arriving first proves the forbidden one was dropped."""

from __future__ import annotations

import asyncio
import getpass
import queue
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import update

from controller.cli import main
from controller.db.models import Locker
from controller.embedded_broker import MosquittoProcess, find_mosquitto, free_port
from controller.runtime import Runtime
from controller.services.broker_config import mosquitto_hash
from controller.testing.seed import Seeded
from controller.testing.waiting import eventually

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")

CONTROLLER_PASSWORD = "controller-broker-password-for-tests"
WAIT = 10.0


class GeneratedBroker(MosquittoProcess):
    """Mosquitto run on the generated ``mosquitto.conf`` as it is."""

    def write_config(self) -> None:
        return None


class Client:
    """A paho client whose CONNACK and messages the test can wait for."""

    def __init__(self, port: int, user: str | None, password: str | None) -> None:
        self.port = port
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:10]}",
            protocol=mqtt.MQTTv311,
        )  # fmt: skip
        if user is not None:
            self.client.username_pw_set(user, password)
        self.client.reconnect_delay_set(60, 60)
        self.connack = threading.Event()
        self.accepted = False
        self.subscribed: queue.Queue[int] = queue.Queue()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda _c, _u, mid, _codes, _p: self.subscribed.put(mid)
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))

    def _on_connect(self, _c: object, _u: object, _f: object, code: object, _p: object) -> None:
        self.accepted = not getattr(code, "is_failure", True)
        self.connack.set()

    def connect(self) -> bool:
        """Connect; return whether the broker accepted (the CONNACK's verdict)."""
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        assert self.connack.wait(WAIT), "no CONNACK"
        if not self.accepted:
            self.close()
        return self.accepted

    def subscribe(self, *topics: str) -> None:
        for topic in topics:
            _, mid = self.client.subscribe(topic, qos=1)
            assert self.subscribed.get(timeout=WAIT) == mid

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(WAIT)

    def next_message(self) -> tuple[str, bytes]:
        return self.messages.get(timeout=WAIT)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_password_hashes_are_mosquittos_own() -> None:
    salt = bytes(range(12))
    assert mosquitto_hash("secret", salt=salt).startswith("$7$101$AAECAwQFBgcICQoL$")


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "mosquitto"


@pytest.fixture(autouse=True)
def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKERFLEET_ENVIRONMENT", "test")  # the tests' derived keys


async def generate(runtime: Runtime, out: Path, port: int) -> None:
    argv = [
        "broker-config", "mosquitto", "--out", str(out),
        "--database-url", runtime.settings.database_url,
        "--mqtt-url", f"mqtt://controller:{CONTROLLER_PASSWORD}@127.0.0.1:{port}",
        "--topic-root", runtime.ctx.topics.root, "--listen-port", str(port),
        "--run-as", getpass.getuser(),  # the tests' files belong to whoever runs them
    ]  # fmt: skip
    assert await asyncio.to_thread(main, argv) == 0


@pytest.fixture
async def broker(
    runtime: Runtime, seeded: Seeded, out: Path, port: int
) -> AsyncIterator[MosquittoProcess]:
    await generate(runtime, out, port)
    process = GeneratedBroker(port, workdir=out)
    process.start()
    try:
        yield process
    finally:
        process.stop()


async def test_no_anonymous_access_and_only_right_passwords(
    runtime: Runtime, seeded: Seeded, broker: MosquittoProcess, port: int, out: Path
) -> None:
    assert "allow_anonymous false" in (out / "mosquitto.conf").read_text()
    first, second = sorted(seeded.lockers)
    assert not Client(port, None, None).connect()
    assert not Client(port, first, seeded.lockers[second].mqtt_password).connect()
    assert not Client(port, "controller", "wrong").connect()
    for user, password in (
        (first, seeded.lockers[first].mqtt_password),
        ("controller", CONTROLLER_PASSWORD),
    ):
        client = Client(port, user, password)
        assert client.connect(), user
        client.close()


async def test_a_locker_cannot_publish_as_another_nor_read_its_commands(
    runtime: Runtime, seeded: Seeded, broker: MosquittoProcess, port: int
) -> None:
    root = runtime.ctx.topics.root
    first, second = sorted(seeded.lockers)
    controller = Client(port, "controller", CONTROLLER_PASSWORD)
    one = Client(port, first, seeded.lockers[first].mqtt_password)
    two = Client(port, second, seeded.lockers[second].mqtt_password)
    for client in (controller, one, two):
        assert client.connect()
    try:
        controller.subscribe(f"{root}/locker/+/event")
        one.publish(f"{root}/locker/{second}/event", b"forged")
        one.publish(f"{root}/locker/{first}/event", b"genuine")
        assert controller.next_message() == (f"{root}/locker/{first}/event", b"genuine")

        one.subscribe(f"{root}/locker/+/cmd", f"{root}/locker/{second}/#")
        two.subscribe(f"{root}/locker/{second}/cmd")
        controller.publish(f"{root}/locker/{second}/cmd", b"for two")
        controller.publish(f"{root}/locker/{first}/cmd", b"for one")
        assert two.next_message() == (f"{root}/locker/{second}/cmd", b"for two")
        assert one.next_message() == (f"{root}/locker/{first}/cmd", b"for one")
    finally:
        for client in (controller, one, two):
            client.close()


async def test_decommissioned_and_rotated_lockers_are_shut_out_after_a_reload(
    runtime: Runtime, seeded: Seeded, broker: MosquittoProcess, port: int, out: Path
) -> None:
    first, second = sorted(seeded.lockers)
    old_password = seeded.lockers[first].mqtt_password
    async with runtime.db.sessions.begin() as session:
        await session.execute(
            update(Locker).where(Locker.id == second).values(status="decommissioned")
        )
        await session.execute(update(Locker).where(Locker.id == first).values(key_generation=2))
    await generate(runtime, out, port)
    broker.reload()
    await eventually(
        lambda: not Client(port, second, seeded.lockers[second].mqtt_password).connect(),
        within=WAIT, what="the decommissioned locker refused",
    )  # fmt: skip
    assert not Client(port, first, old_password).connect(), "the old generation is revoked"
    rotated = Client(port, first, runtime.ctx.keys.mqtt_password(first, 2))
    assert rotated.connect()
    rotated.close()
