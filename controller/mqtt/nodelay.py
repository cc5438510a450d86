"""Small MQTT packets go out at once: Nagle's algorithm off on a paho client's socket.

paho leaves Nagle's algorithm on. A small write that follows another before the broker's TCP
acknowledgement has come back then waits for it, and a broker that has nothing to send in
return delays that acknowledgement (delayed ACK: at least 40 ms on Linux, up to 200 ms
elsewhere). A PUBACK followed by a publish, or two publishes in a row, is exactly that
pattern. Measured on the deposit benchmark (50 couriers pausing 3-8 s, docs/performance.md,
round 5): the time from the lock's release to the stored door events had a second mode about
40 ms above the first for over half the deposits (median 57-60 ms in three loads); with Nagle
off in the simulator and the controller, 6-9 of 150 deposits were that slow (median 23-24 ms).
"""

from __future__ import annotations

import socket
from typing import Any

import paho.mqtt.client as paho


def set_tcp_nodelay(sock: Any) -> None:
    """Turn Nagle's algorithm off on ``sock`` (TCP, plain or TLS); anything else is left."""
    if sock is None or getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def client_tcp_nodelay(client: paho.Client) -> None:
    """:func:`set_tcp_nodelay` on a connected paho client's socket."""
    set_tcp_nodelay(client.socket())
