"""The ceiling for the simulator benchmark: bare paho clients on the same epoll loop.

A bare client does only what every simulated locker's transport must do: connect with its own
client id, a retained last will and a persistent session, publish a retained ``online``
presence (QoS 1) when the CONNACK arrives, and a heartbeat of telemetry size every
``heartbeat_s`` (at the telemetry's QoS, 0), with keep-alive handled by the same ``loop_misc``
sweep and connects admitted by the same window. No firmware, no message building: the payloads
are fixed bytes. Used by ``bench/sim_capacity.py``; nothing else depends on it.
"""

from __future__ import annotations

import time
import zlib
from collections import deque
from functools import partial
from typing import Any

from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from firmware_sim.netloop import LoopClient, NetLoop

MISC_TICK_MS = 250
MISC_PERIOD_MS = 5_000
HEARTBEAT = b'{"v":1,"type":"telemetry","locker_id":"BARE-00000","boot_id":1,"seq":1,' + (
    b'"ts":1735689600000,"uptime_s":100,"power":"mains","battery_pct":100,"rssi_dbm":-75,'
    b'"doors_open":0,"pending_events":0,"events_dropped_total":0,"temperatures":['
    b'{"compartment":"C05","deci_celsius":40},{"compartment":"C06","deci_celsius":41}]}'
)
ONLINE = b'{"v":1,"type":"presence","state":"online"}'
OFFLINE = b'{"v":1,"type":"presence","state":"offline"}'


class BareFleet:
    """``n`` bare clients on one :class:`NetLoop`; counts CONNACKs on the client side."""

    def __init__(
        self,
        n: int,
        host: str,
        port: int,
        *,
        prefix: str = "BARE-",
        root: str = "bench/v1",
        heartbeat_s: int = 30,
        keepalive_s: int = 60,
        connect_window: int = 64,
    ) -> None:
        self.loop = NetLoop(connect_workers=0, name="bare-net")
        self.heartbeat_ms = heartbeat_s * 1000
        self.window = connect_window
        self.connacks = 0
        self.connected = 0
        self.errors = 0
        self.publishes = 0
        self.all_connected_at: float | None = None
        self.started_at = 0.0
        self.clients: list[LoopClient] = []
        self._queue: deque[LoopClient] = deque()
        self._outstanding = 0
        self._misc_index = 0
        self._topics: dict[int, tuple[str, str]] = {}
        on_connect, on_disconnect = self._on_connect, self._on_disconnect  # made once, shared
        for i in range(n):
            cid = f"{prefix}{i:05d}"
            client = LoopClient(
                CallbackAPIVersion.VERSION2,
                client_id=cid,
                clean_session=False,
                protocol=MQTTProtocolVersion.MQTTv311,
                reconnect_on_failure=False,
            )
            presence = f"{root}/locker/{cid}/presence"
            telemetry = f"{root}/locker/{cid}/telemetry"
            client.user_data_set((presence, telemetry, zlib.crc32(cid.encode())))
            client.will_set(presence, OFFLINE, 1, True)
            client.on_connect = on_connect
            client.on_disconnect = on_disconnect
            self.loop.attach(client)
            client.connect_async(host, port, keepalive_s)
            self.clients.append(client)
            self._queue.append(client)

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.loop.after_each_turn(self._admit)
        self.loop.start()
        self.loop.call(lambda: self.loop.at(self._now() + MISC_TICK_MS, self._misc)).result()

    def stop(self) -> None:
        self.loop.stop()

    @staticmethod
    def _now() -> int:
        return time.time_ns() // 1_000_000

    def _admit(self) -> None:
        while self._queue and self._outstanding < self.window:
            client = self._queue.popleft()
            self._outstanding += 1
            self.loop.connect(client, partial(self._tcp_done, client))

    def _tcp_done(self, client: LoopClient, exc: BaseException | None) -> None:
        if exc is not None:
            self.errors += 1
            self._outstanding -= 1
            self._queue.append(client)

    def _on_connect(self, client: Any, userdata: Any, _flags: Any, reason: Any, _p: Any) -> None:
        self._outstanding -= 1
        if reason.is_failure:
            self.errors += 1
            return
        self.connacks += 1
        self.connected += 1
        if self.connected == len(self.clients) and self.all_connected_at is None:
            self.all_connected_at = time.monotonic()
        presence, telemetry, phase = userdata
        client.publish(presence, ONLINE, 1, True)
        self.publishes += 1
        first = self._now() + phase % self.heartbeat_ms
        self.loop.at(first, lambda: self._beat(client, telemetry))

    def _beat(self, client: Any, topic: str) -> None:
        if client.is_connected():
            client.publish(topic, HEARTBEAT, 0, False)
            self.publishes += 1
        self.loop.at(self._now() + self.heartbeat_ms, lambda: self._beat(client, topic))

    def _on_disconnect(self, client: Any, *_: Any) -> None:
        self.connected -= 1
        self.errors += 1

    def _misc(self) -> None:
        clients = self.clients
        share = max(1, len(clients) * MISC_TICK_MS // MISC_PERIOD_MS)
        for _ in range(min(share, len(clients))):
            self._misc_index = (self._misc_index + 1) % len(clients)
            client = clients[self._misc_index]
            if client.is_connected():
                client.loop_misc()
        self.loop.at(self._now() + MISC_TICK_MS, self._misc)
