"""Checking a broker before starting a fleet, so that a wrong address is one clear line.

:func:`probe_broker` opens a TCP connection, then an MQTT session with the credentials of one
locker (under a client id of its own, with a clean session, so the locker's persistent session
is left alone), and raises :class:`BrokerProblem` with a sentence fit to show a user if either
fails: unreachable, refused, not authorised, not an MQTT broker.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from protocol.urls import BrokerAddress


class BrokerProblem(RuntimeError):
    """The broker cannot be used; the message says why, in one line."""


def probe_broker(
    address: BrokerAddress,
    *,
    username: str | None = None,
    password: str | None = None,
    who: str = "the simulator",
    timeout: float = 5.0,
) -> None:
    """Return if an MQTT session can be opened at ``address``; raise :class:`BrokerProblem`."""
    url = address.url()
    try:
        socket.create_connection((address.host, address.port), timeout=timeout).close()
    except socket.gaierror:
        raise BrokerProblem(f"cannot find the MQTT broker host {address.host!r}") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise BrokerProblem(f"cannot reach the MQTT broker at {url}: {reason}") from None
    outcome: dict[str, Any] = {}
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"locker-sim-probe-{os.getpid()}",
        clean_session=True,
        protocol=MQTTProtocolVersion.MQTTv311,
        reconnect_on_failure=False,
    )
    if username is not None:
        client.username_pw_set(username, password or None)
    if address.tls:
        client.tls_set()

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        outcome["reason"] = reason

    client.on_connect = on_connect
    try:
        client.connect(address.host, address.port, keepalive=10)
        deadline = time.monotonic() + timeout
        while "reason" not in outcome and time.monotonic() < deadline:
            client.loop(0.1)
    except OSError as exc:
        raise BrokerProblem(f"the MQTT broker at {url} failed: {exc}") from None
    finally:
        if "reason" in outcome and not outcome["reason"].is_failure:
            client.disconnect()
            client.loop(0.1)
        sock = client.socket()
        if sock is not None:
            sock.close()
    verdict = outcome.get("reason")
    if verdict is None:
        raise BrokerProblem(f"{url} accepted a connection but sent no MQTT CONNACK")
    if verdict.is_failure:
        raise BrokerProblem(f"the MQTT broker at {url} refused {who}: {verdict}")
