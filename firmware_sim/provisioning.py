"""An unprovisioned locker: it holds a one-time token, asks for its credentials, keeps them.

A locker fresh from the factory knows its id, its layout and a provisioning token a technician
gave it (:class:`Unprovisioned`), but no keys and no broker password. It asks for them once
(docs/protocol.md §3.5, §12.4) and keeps the answer in a :class:`CredentialStore`; from then
on it is an ordinary :class:`~firmware_sim.spec.LockerSpec` and runs as any other locker.

* :class:`Provisioner` is the firmware's side, sans I/O: :meth:`~Provisioner.request` makes a
  request with a fresh request id (or repeats the pending one as it is, so that an answer to
  any copy is taken), :meth:`~Provisioner.receive` takes any payload and returns
  the credentials, the refusal reason, or ``None`` for anything that is not an authentic answer
  to the pending request (:func:`protocol.provisioning.open_response`).
* :func:`provision_over_mqtt` runs it on the shared provisioning identity (one paho client,
  driven in the calling thread): subscribe to the response topic, publish the request (the
  same again every ``retry_s``), wait for the answer.
* :func:`provision_over_serial` runs it on the bench link: the request when it starts and
  again whenever the host greets it, until the bench tool answers.
* :func:`load_fleet_with_tokens` reads a fleet file in which some ``[[locker]]`` tables give a
  ``provisioning_token`` instead of keys.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from firmware_sim.files import locker_from_dict
from firmware_sim.spec import DEFAULT_FIRMWARE, CompartmentSpec, LockerSpec
from protocol.codec import decode, encode, parse_json
from protocol.errors import ProtocolError
from protocol.fields import from_wire, to_wire
from protocol.framing import FrameDecoder, encode_frame
from protocol.messages import (
    ControllerPresence,
    LockerCredentials,
    PresenceState,
    ProvisionRefusal,
    ProvisionRequest,
    ProvisionResponse,
)
from protocol.provisioning import open_response
from protocol.topics import PROVISIONING, TopicLayout
from protocol.urls import BrokerAddress

PROVISIONING_USER = "_provisioning"
RETRY_S = 30.0
"""How long a locker waits for an answer before it asks again (a new request id)."""
RESPONSES = {ProvisionResponse.TYPE: ProvisionResponse}


class ProvisioningFailed(RuntimeError):
    """Provisioning did not succeed; the message says why, in one line."""


class ProvisioningRefused(ProvisioningFailed):
    """The controller refused the token (unknown, used, expired, another locker's)."""


@dataclass(frozen=True, slots=True)
class Unprovisioned:
    """A locker with a provisioning token and no credentials yet."""

    locker_id: str
    token: str
    compartments: tuple[CompartmentSpec, ...]
    firmware: str = DEFAULT_FIRMWARE
    model: str = "LF-24"
    battery_backup_s: int = 4 * 3600
    rssi_dbm: int = -75

    def provisioned(self, credentials: LockerCredentials) -> LockerSpec:
        """Return the locker's spec with the credentials it received."""
        return LockerSpec(
            locker_id=self.locker_id,
            command_key=bytes.fromhex(credentials.command_key),
            code_key=bytes.fromhex(credentials.code_key),
            username=credentials.mqtt_username,
            password=credentials.mqtt_password,
            compartments=self.compartments,
            firmware=self.firmware,
            model=self.model,
            battery_backup_s=self.battery_backup_s,
            rssi_dbm=self.rssi_dbm,
        )


class CredentialStore:
    """Where a locker keeps its credentials: a JSON file readable by its owner only, or
    memory (``path`` None)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._memory: LockerCredentials | None = None

    def load(self) -> LockerCredentials | None:
        """Return the stored credentials, or ``None``. Raises :class:`ValueError` for a file
        that holds no credentials."""
        if self.path is None:
            return self._memory
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return from_wire(LockerCredentials, data)
        except FileNotFoundError:
            return None
        except (ValueError, ProtocolError) as exc:
            raise ValueError(f"{self.path} holds no locker credentials: {exc}") from None

    def save(self, credentials: LockerCredentials) -> None:
        if self.path is None:
            self._memory = credentials
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(to_wire(credentials), out)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


class Provisioner:
    """The firmware's side of provisioning, sans I/O."""

    def __init__(
        self,
        locker: Unprovisioned,
        rtc_ms: Callable[[], int],
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.locker = locker
        self.rtc_ms = rtc_ms
        self.random_bytes = random_bytes
        self.pending: str | None = None
        self.requests = 0

    def request(self) -> ProvisionRequest:
        """Return the pending request, sent again as it is until it is answered (so an answer
        to any copy counts), or a new one with a fresh request id."""
        if self.pending is None:
            self.pending = self.random_bytes(16).hex()
        self.requests += 1
        return ProvisionRequest(
            locker_id=self.locker.locker_id, request_id=self.pending, token=self.locker.token,
            ts=max(0, self.rtc_ms()), firmware=self.locker.firmware, model=self.locker.model,
        )  # fmt: skip

    def receive(self, payload: bytes) -> LockerCredentials | ProvisionRefusal | None:
        """Return what an authentic answer to the pending request says; ``None`` for anything
        else (not a response, another request's, a MAC that does not verify)."""
        if self.pending is None:
            return None
        try:
            response = decode(payload, RESPONSES)
            outcome = open_response(
                response, token=self.locker.token, locker_id=self.locker.locker_id,
                request_id=self.pending,
            )  # fmt: skip
        except ProtocolError:
            return None
        if outcome is not None:
            self.pending = None
        return outcome


def _finish(
    locker: Unprovisioned, outcome: LockerCredentials | ProvisionRefusal, store: CredentialStore
) -> LockerSpec:
    if isinstance(outcome, LockerCredentials):
        store.save(outcome)
        return locker.provisioned(outcome)
    if outcome is ProvisionRefusal.INVALID_TOKEN:
        raise ProvisioningRefused(
            f"{locker.locker_id}: the controller refused the provisioning token (unknown, used, "
            "expired or another locker's); ask for a new one"
        )
    raise ProvisioningFailed(f"{locker.locker_id}: the controller cannot provision now ({outcome})")


def provision_over_mqtt(
    locker: Unprovisioned,
    broker: BrokerAddress,
    password: str,
    *,
    store: CredentialStore | None = None,
    topic_root: str = "lf/v1",
    username: str = PROVISIONING_USER,
    timeout: float = 60.0,
    retry_s: float = RETRY_S,
) -> LockerSpec:
    """Return the locker's spec with its credentials, asking for them over MQTT on the
    provisioning identity (``username``/``password``) unless ``store`` has them already.

    The credentials are saved in ``store`` before this returns. A controller that answers
    ``unavailable`` is asked again (a new request) ``retry_s`` later. Raises
    :class:`ProvisioningRefused` when the token is refused, :class:`ProvisioningFailed` when
    the broker refuses the identity or no answer comes within ``timeout`` seconds.
    """
    store = store or CredentialStore()
    kept = store.load()
    if kept is not None:
        return locker.provisioned(kept)
    layout = TopicLayout(topic_root)
    provisioner = Provisioner(locker, lambda: time.time_ns() // 1_000_000)
    state: dict[str, Any] = {}
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"prov-{locker.locker_id}-{secrets.token_hex(4)}",
        clean_session=True,
        protocol=MQTTProtocolVersion.MQTTv311,
        reconnect_on_failure=False,
    )
    client.username_pw_set(username, password)
    if broker.tls:
        client.tls_set()
    response_topic = layout.provision_response(locker.locker_id)

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        state["connack"] = reason
        if not reason.is_failure:
            c.subscribe(response_topic, qos=PROVISIONING.qos)

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        state["subscribed"] = not any(getattr(code, "is_failure", False) for code in codes)

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == response_topic:
            outcome = provisioner.receive(bytes(message.payload))
            if outcome is ProvisionRefusal.UNAVAILABLE:
                state["busy"] = True  # ask again (a new request) after retry_s
            elif outcome is not None:
                state["outcome"] = outcome

    client.on_connect, client.on_subscribe, client.on_message = (
        on_connect, on_subscribe, on_message,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    asked_at = 0.0
    try:
        client.connect(broker.host, broker.port, keepalive=30)
        while "outcome" not in state:
            if time.monotonic() > deadline:
                raise ProvisioningFailed(
                    f"{locker.locker_id}: no answer to the provisioning request within "
                    f"{timeout:.0f} s (is the controller running?)"
                )
            client.loop(0.1)
            reason = state.get("connack")
            if reason is not None and reason.is_failure:
                raise ProvisioningFailed(
                    f"{locker.locker_id}: the broker refused the provisioning identity "
                    f"{username!r}: {reason}"
                )
            if state.get("subscribed") is False:
                raise ProvisioningFailed(
                    f"{locker.locker_id}: the broker does not let {username!r} read "
                    f"{response_topic}"
                )
            if state.pop("busy", False):
                asked_at = time.monotonic()
            if state.get("subscribed") and time.monotonic() - asked_at >= retry_s:
                request = provisioner.request()
                client.publish(
                    layout.provision_request(locker.locker_id), encode(request),
                    qos=PROVISIONING.qos,
                )  # fmt: skip
                asked_at = time.monotonic()
    except OSError as exc:
        raise ProvisioningFailed(
            f"{locker.locker_id}: the MQTT broker at {broker.url()} failed: {exc}"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            client.disconnect()
            client.loop(0.1)
    return _finish(locker, state["outcome"], store)


def provision_over_serial(
    locker: Unprovisioned,
    fd: int,
    *,
    store: CredentialStore | None = None,
    timeout: float | None = None,
    rtc_ms: Callable[[], int] | None = None,
) -> LockerSpec:
    """Return the locker's spec with its credentials, asking the bench tool on the serial line
    ``fd`` (a non-blocking file descriptor) for them unless ``store`` has them already.

    Sends a request at once and again whenever the host greets the locker; gives up after
    ``timeout`` seconds (None: never). Raises :class:`ProvisioningRefused`,
    :class:`ProvisioningFailed`, or :class:`OSError` when the line fails.
    """
    store = store or CredentialStore()
    kept = store.load()
    if kept is not None:
        return locker.provisioned(kept)
    provisioner = Provisioner(locker, rtc_ms or (lambda: time.time_ns() // 1_000_000))
    decoder = FrameDecoder()
    deadline = None if timeout is None else time.monotonic() + timeout

    def send_request() -> None:
        data = memoryview(encode_frame(encode(provisioner.request())))
        while data:
            select.select([], [fd], [], 1.0)
            with contextlib.suppress(BlockingIOError):
                data = data[os.write(fd, data) :]

    send_request()
    while True:
        if deadline is not None and time.monotonic() > deadline:
            raise ProvisioningFailed(f"{locker.locker_id}: the bench tool did not answer")
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            continue
        for payload in decoder.feed(data):
            outcome = provisioner.receive(payload)
            if outcome is not None:
                return _finish(locker, outcome, store)
            if _is_greeting(payload):
                send_request()


def _is_greeting(payload: bytes) -> bool:
    try:
        data = parse_json(payload)
    except ProtocolError:
        return False
    return data.get("type") == ControllerPresence.TYPE and data.get("state") == (
        PresenceState.ONLINE.value
    )


def unprovisioned_from_dict(entry: dict[str, Any], where: str) -> Unprovisioned:
    """Return the unprovisioned locker of a ``[[locker]]`` table with a ``provisioning_token``.

    Raises :class:`ValueError`.
    """
    placeholder = {"command_key": "00" * 32, "code_key": "00" * 32}  # only the layout is used
    spec = locker_from_dict({**entry, **placeholder}, None, where)
    token = entry["provisioning_token"]
    if not isinstance(token, str) or not token:
        raise ValueError(f"{where}: provisioning_token must be a non-empty string")
    return Unprovisioned(
        locker_id=spec.locker_id, token=token, compartments=spec.compartments,
        firmware=spec.firmware, model=spec.model, battery_backup_s=spec.battery_backup_s,
        rssi_dbm=spec.rssi_dbm,
    )  # fmt: skip


def load_fleet_with_tokens(path: str | Path) -> tuple[list[LockerSpec], list[Unprovisioned]]:
    """Return the provisioned and the unprovisioned lockers of a fleet file; a ``[[locker]]``
    table with ``provisioning_token = "..."`` (and no keys) is an unprovisioned one.

    Raises :class:`ValueError` (one line).
    """
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    seed = data.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise ValueError(f"{path}: seed must be an integer")
    entries = data.get("locker")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: no [[locker]] tables")
    ready: list[LockerSpec] = []
    waiting: list[Unprovisioned] = []
    for i, entry in enumerate(entries):
        where = f"{path}: locker {i + 1}"
        if "provisioning_token" in entry:
            waiting.append(unprovisioned_from_dict(entry, where))
        else:
            ready.append(locker_from_dict(entry, seed, where))
    ids = [s.locker_id for s in ready] + [u.locker_id for u in waiting]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: locker ids must be unique")
    return ready, waiting
