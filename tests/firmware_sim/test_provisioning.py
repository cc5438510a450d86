"""The unprovisioned locker's side: its requests, what it accepts, where it keeps its
credentials, fleet files with provisioning tokens, and the CLI's one-line errors."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from firmware_sim.cli import main
from firmware_sim.provisioning import (
    CredentialStore,
    Provisioner,
    Unprovisioned,
    load_fleet_with_tokens,
    provision_over_mqtt,
)
from firmware_sim.spec import model_layout
from protocol.codec import decode, encode
from protocol.messages import LockerCredentials, ProvisionRefusal, ProvisionRequest
from protocol.provisioning import refusal, seal_credentials
from protocol.topics import TopicLayout
from protocol.urls import BrokerAddress
from tests.controller.test_security_broker import Client

TOKEN = "lfp_" + "k" * 43
LOCKER = Unprovisioned("XZ-0001", TOKEN, model_layout("LF-12"), model="LF-12")
CREDENTIALS = LockerCredentials("XZ-0001", "secret-password", "11" * 32, "22" * 32, "lf/v1")


def answer(request_id: str, token: str = TOKEN) -> bytes:
    return encode(
        seal_credentials(
            CREDENTIALS, token=token, locker_id="XZ-0001", request_id=request_id,
            nonce=bytes(16), ts=5,
        )
    )  # fmt: skip


def test_a_request_is_repeated_unchanged_until_an_authentic_answer_arrives() -> None:
    """Afterwards the provisioner has nothing pending; its next request is a new one."""
    counter = iter(range(1, 100))
    provisioner = Provisioner(LOCKER, lambda: 7, lambda n: bytes([next(counter)]) * n)
    first = provisioner.request()
    assert provisioner.request() == first and first.token == TOKEN and first.model == "LF-12"
    assert provisioner.receive(b"not json") is None
    assert provisioner.receive(answer("ff" * 16)) is None, "another request's answer"
    assert provisioner.receive(answer(first.request_id, "lfp_" + "x" * 43)) is None, "forged"
    assert provisioner.pending == first.request_id
    assert provisioner.receive(answer(first.request_id)) == CREDENTIALS
    assert provisioner.pending is None
    assert provisioner.receive(answer(first.request_id)) is None, "nothing pending any more"
    assert provisioner.request().request_id != first.request_id


def test_a_refusal_is_taken_only_when_authentic() -> None:
    provisioner = Provisioner(LOCKER, lambda: 7)
    request = provisioner.request()
    keys = {"locker_id": "XZ-0001", "request_id": request.request_id, "nonce": bytes(16), "ts": 1}
    forged = refusal(ProvisionRefusal.INVALID_TOKEN, token="lfp_" + "y" * 43, **keys)  # type: ignore[arg-type]
    assert provisioner.receive(encode(forged)) is None
    real = refusal(ProvisionRefusal.INVALID_TOKEN, token=TOKEN, **keys)  # type: ignore[arg-type]
    assert provisioner.receive(encode(real)) is ProvisionRefusal.INVALID_TOKEN


def test_credentials_are_kept_in_a_private_file(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "XZ-0001.credentials.json")
    assert store.load() is None
    store.save(CREDENTIALS)
    assert CredentialStore(store.path).load() == CREDENTIALS
    assert store.path is not None and store.path.stat().st_mode & 0o777 == 0o600
    spec = LOCKER.provisioned(CREDENTIALS)
    assert spec.command_key == bytes.fromhex("11" * 32) and spec.password == "secret-password"
    store.path.write_text("{}")
    with pytest.raises(ValueError, match="holds no locker credentials"):
        store.load()


FLEET = """
seed = 3

[[locker]]
locker_id = "XZ-0001"
model = "LF-12"

[[locker]]
locker_id = "XZ-0002"
model = "LF-24C"
provisioning_token = "lfp_abcdefghijklmnop"
"""


def test_a_fleet_file_may_give_tokens_instead_of_keys(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET)
    ready, waiting = load_fleet_with_tokens(path)
    assert [s.locker_id for s in ready] == ["XZ-0001"]
    assert [(u.locker_id, u.token, u.model) for u in waiting] == [
        ("XZ-0002", "lfp_abcdefghijklmnop", "LF-24C")
    ]
    assert waiting[0].compartments == model_layout("LF-24C")


def test_the_cli_asks_for_the_provisioning_password_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET)
    assert main(["fleet", "--fleet", str(path), "--duration", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--provisioning-password" in err


@pytest.mark.mqtt
def test_over_mqtt_a_busy_controller_is_asked_again_with_a_new_request(
    mqtt_broker: BrokerAddress, topic_root: str
) -> None:
    """The test plays the controller on a real broker: it answers the first request
    ``unavailable`` and the second with the credentials. Afterwards the locker holds them, and
    its second request was a new one (a fresh request id)."""
    layout = TopicLayout(topic_root)
    controller = Client(mqtt_broker.port, mqtt_broker.username, mqtt_broker.password)
    assert controller.connect()
    controller.subscribe(layout.provision_request("XZ-0001"))
    store = CredentialStore()
    with ThreadPoolExecutor(1) as pool:
        locker = pool.submit(
            provision_over_mqtt, LOCKER, mqtt_broker, "unused", store=store,
            topic_root=topic_root, timeout=30, retry_s=0.2,
        )  # fmt: skip
        try:
            first = decode(controller.next_message()[1], {"provision_request": ProvisionRequest})
            busy = refusal(
                ProvisionRefusal.UNAVAILABLE, token=TOKEN, locker_id="XZ-0001",
                request_id=first.request_id, nonce=bytes(16), ts=1,
            )  # fmt: skip
            controller.publish(layout.provision_response("XZ-0001"), encode(busy))
            second = decode(controller.next_message()[1], {"provision_request": ProvisionRequest})
            assert second.request_id != first.request_id
            controller.publish(layout.provision_response("XZ-0001"), answer(second.request_id))
            spec = locker.result(30)
        finally:
            controller.close()
    assert spec.password == "secret-password" and store.load() == CREDENTIALS
