"""``lockerfleet bench``: provision a locker on the technician's bench, over a serial cable.

The locker sits on a USB-serial adapter; it holds a one-time provisioning token and no
credentials yet. The tool (docs/protocol.md §12.4):

1. opens the port and greets the locker (``controller_presence`` ``online``), again every two
   seconds until the locker answers with its ``provision_request`` frame;
2. trades the token for the locker's credentials with the controller's HTTP API
   (``POST /api/v1/provisioning/redeem`` with the token and the locker id: a token issued for
   another locker is refused and stays unused);
3. answers the locker with a ``provision_response`` frame sealed with the token's keys, exactly
   as the controller answers over MQTT, so the locker takes it the same way (a refusal is sent
   as a refusal, so the locker's screen says so too);
4. greets the locker again and waits for its ``presence`` ``online``: proof that it took the
   credentials and now runs as a provisioned locker.

Everything a technician can get wrong (no such port, port busy, the locker silent or already
provisioned, the controller unreachable, the token refused) raises :class:`BenchError` with one
line saying what to do.
"""

from __future__ import annotations

import errno
import os
import secrets
import select
import time
from dataclasses import dataclass
from typing import Any

import httpx
import serial

from controller.services.views import Credentials
from protocol.codec import decode, encode
from protocol.errors import ProtocolError
from protocol.framing import FrameDecoder, encode_frame
from protocol.messages import (
    DEVICE_MESSAGES,
    ControllerPresence,
    LockerCredentials,
    Message,
    Presence,
    PresenceState,
    ProvisionRefusal,
    ProvisionRequest,
)
from protocol.provisioning import NONCE_BYTES, refusal, seal_credentials

GREET_EVERY_S = 2.0
FROM_LOCKER: dict[str, type[Any]] = {**DEVICE_MESSAGES, ProvisionRequest.TYPE: ProvisionRequest}


class BenchError(Exception):
    """Something the technician can fix; one line."""


@dataclass(frozen=True)
class BenchResult:
    locker_id: str
    confirmed: bool
    """The locker came back on the line as a provisioned locker."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class BenchLine:
    """The tool's end of the serial line: framed messages out, decoded locker messages in."""

    def __init__(self, port: str, baudrate: int = 115_200) -> None:
        self.path = port
        try:
            self.port = serial.Serial(port, baudrate=baudrate, timeout=0, exclusive=True)
        except serial.SerialException as exc:
            reasons = {
                errno.ENOENT: "does not exist (is the USB-serial cable plugged in?)",
                errno.EACCES: "is not accessible (add yourself to the dialout group)",
                errno.EBUSY: "is busy (another program has it open)",
                errno.EAGAIN: "is busy (another program has it open)",
            }
            reason = reasons.get(exc.errno or 0, f"cannot be opened: {exc}")
            raise BenchError(f"serial port {port} {reason}") from None
        self.decoder = FrameDecoder()

    def close(self) -> None:
        self.port.close()

    def send(self, message: Message) -> None:
        data = memoryview(encode_frame(encode(message)))
        fd = self.port.fileno()
        while data:
            select.select([], [fd], [], 1.0)
            try:
                data = data[os.write(fd, data) :]
            except BlockingIOError:
                continue

    def greet(self) -> None:
        self.send(ControllerPresence("bench", PresenceState.ONLINE, _now_ms()))

    def wait_for(self, wanted: tuple[type[Any], ...], timeout: float) -> Any | None:
        """Greet the locker every two seconds and return the first message of a ``wanted``
        type it sends; ``None`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        next_greeting = 0.0
        fd = self.port.fileno()
        while (left := deadline - time.monotonic()) > 0:
            if time.monotonic() >= next_greeting:
                self.greet()
                next_greeting = time.monotonic() + GREET_EVERY_S
            ready, _, _ = select.select([fd], [], [], min(left, 0.2))
            if not ready:
                continue
            try:
                data = os.read(fd, 4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                raise BenchError(f"serial port {self.path} failed: {exc.strerror}") from None
            for payload in self.decoder.feed(data):
                try:
                    message = decode(payload, FROM_LOCKER)
                except ProtocolError:
                    continue
                if isinstance(message, wanted):
                    return message
        return None


def redeem(api: str, token: str, locker_id: str, client: httpx.Client) -> Credentials | None:
    """Return the credentials for ``token``, or ``None`` if the controller refuses it.

    Raises :class:`BenchError` when the controller cannot be reached or answers otherwise.
    """
    url = api.rstrip("/") + "/api/v1/provisioning/redeem"
    try:
        response = client.post(url, json={"token": token, "locker_id": locker_id})
    except httpx.HTTPError as exc:
        raise BenchError(f"cannot reach the controller at {api}: {exc}") from None
    if response.status_code == 403:
        return None
    if response.status_code != 200:
        raise BenchError(
            f"the controller at {api} answered {response.status_code}: {response.text[:200]}"
        )
    try:
        return Credentials(**response.json())
    except (ValueError, TypeError) as exc:
        raise BenchError(f"the controller at {api} sent no credentials: {exc}") from None


def provision_on_bench(
    port: str,
    api: str,
    *,
    timeout: float = 20.0,
    baudrate: int = 115_200,
    client: httpx.Client | None = None,
) -> BenchResult:
    """Provision the locker on ``port`` through the controller at ``api``; see the module.

    Returns the locker id and whether the locker came back provisioned. Raises
    :class:`BenchError`.
    """
    line = BenchLine(port, baudrate)
    http = client or httpx.Client(timeout=10.0)
    try:
        first = line.wait_for((ProvisionRequest, Presence), timeout)
        if first is None:
            raise BenchError(
                f"no locker answered on {port} within {timeout:.0f} s "
                "(is it powered, and is the baud rate right?)"
            )
        if isinstance(first, Presence):
            raise BenchError(
                f"locker {first.locker_id} on {port} is provisioned already (it needs a new "
                "token and a factory reset to be provisioned again)"
            )
        request: ProvisionRequest = first
        issued = redeem(api, request.token, request.locker_id, http)
        keys: dict[str, Any] = {
            "token": request.token,
            "locker_id": request.locker_id,
            "request_id": request.request_id,
            "nonce": secrets.token_bytes(NONCE_BYTES),
            "ts": _now_ms(),
        }
        if issued is None:
            line.send(refusal(ProvisionRefusal.INVALID_TOKEN, **keys))
            raise BenchError(
                f"the controller refused the token of locker {request.locker_id}: it is unknown, "
                "used, expired or another locker's, or the locker is decommissioned; "
                "issue a new token"
            )
        credentials = LockerCredentials(
            mqtt_username=issued.mqtt_username, mqtt_password=issued.mqtt_password,
            command_key=issued.command_key_hex, code_key=issued.code_key_hex,
            topic_root=issued.topic_root,
        )  # fmt: skip
        line.send(seal_credentials(credentials, **keys))
        back = line.wait_for((Presence,), timeout)
        confirmed = isinstance(back, Presence) and back.locker_id == request.locker_id
        return BenchResult(request.locker_id, confirmed)
    finally:
        if client is None:
            http.close()
        line.close()
