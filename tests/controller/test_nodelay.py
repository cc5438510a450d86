"""Nagle's algorithm is off on the controller's MQTT connections (``controller.mqtt.nodelay``),
so a small packet that follows another is not held for the broker's delayed ACK. What that
costs when it is on is measured by the deposit benchmark (docs/performance.md, round 5), not
here. The simulated lockers' side: ``tests/firmware_sim/test_mqtt_fleet.py``."""

from __future__ import annotations

import asyncio
import socket

import pytest

from controller.mqtt.nodelay import set_tcp_nodelay
from controller.mqtt.reading import paho_client_of
from controller.runtime import build_runtime
from controller.testing.waiting import eventually
from protocol.urls import BrokerAddress
from tests.controller.conftest import controller_settings


def nodelay(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_a_tcp_socket_is_set_and_anything_else_left_alone() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        assert not nodelay(tcp), "the kernel's default, which paho keeps"
        set_tcp_nodelay(tcp)
        assert nodelay(tcp)
    left, right = socket.socketpair()  # AF_UNIX: no such option
    with left, right:
        set_tcp_nodelay(left)
    set_tcp_nodelay(None)  # a client that is not connected


@pytest.mark.mqtt
async def test_the_bridge_connection_sends_at_once(
    migrated_url: str, topic_root: str, mqtt_broker: BrokerAddress
) -> None:
    runtime = build_runtime(controller_settings(migrated_url, topic_root, mqtt_broker))
    await runtime.start()
    try:
        bridge = runtime.bridge
        assert bridge is not None
        await eventually(lambda: bridge.stats.connected, what="the bridge connected")
        # The provisioning desk connects once the bridge is up: let it finish subscribing, so
        # that the runtime is not stopped in the middle of its start.
        assert runtime.provisioning is not None
        await asyncio.wait_for(runtime.provisioning.subscribed.wait(), 20)
        sock = paho_client_of(bridge._client).socket()
        assert isinstance(sock, socket.socket) and sock.family == socket.AF_INET
        assert nodelay(sock)
    finally:
        await runtime.stop()
