"""A lean load generator for the ingest benchmark: MQTT 3.1.1 QoS 1 PUBLISH packets built once,
written over plain sockets in bulk, with a window of unacknowledged publishes per connection.

paho spends about half a millisecond of CPU per QoS 1 publish on this machine (a locked queue,
a scan of its in-flight list on every PUBACK, a ``recv`` per packet header): 4 paho clients
publishing 20,000 events used more CPU than the controller replica that stored them. Lockers
are separate devices; their cost should not come out of the 2 cores the controller is measured
on. This writes the same bytes a paho client would (the broker and the subscribers cannot tell
the difference) for a small fraction of the CPU. Used by ``bench/controller_bench.py`` only.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterable

MAX_PACKET_ID = 65_535


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        digit, n = n % 128, n // 128
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def connect_packet(client_id: str, keepalive_s: int = 60) -> bytes:
    """CONNECT, MQTT 3.1.1, clean session, no credentials."""
    body = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", keepalive_s) + _utf8(client_id)
    return b"\x10" + _remaining_length(len(body)) + body


def publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    """PUBLISH at QoS 1 (fixed header 0x32), not retained."""
    body = _utf8(topic) + struct.pack("!H", packet_id) + payload
    return b"\x32" + _remaining_length(len(body)) + body


class RawPublisher:
    """One MQTT connection publishing pre-built QoS 1 packets.

    Packet ids are 1..n in order and never reused, so one connection publishes at most 65,535
    messages. A reader thread counts PUBACKs; ``publish`` keeps at most ``window``
    publishes unacknowledged, writing what the window allows in one ``sendall``.
    """

    def __init__(self, host: str, port: int, client_id: str, window: int = 1000) -> None:
        self.window = window
        self.acked = 0
        self.last_ack = 0.0
        self._cond = threading.Condition()
        self._packets: list[bytes] = []
        self.closed = False
        """The reader saw the connection end: nothing more will be acknowledged."""
        self._sock = socket.create_connection((host, port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.sendall(connect_packet(client_id))
        connack = self._recv_exactly(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"broker refused {client_id}: CONNACK {connack.hex()}")
        self._reader = threading.Thread(target=self._read_acks, daemon=True)
        self._reader.start()

    def _recv_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self._sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            data += chunk
        return data

    def _read_acks(self) -> None:
        """Count PUBACKs (0x40 0x02 id id) in the stream; skip anything else whole."""
        try:
            self._count_acks()
        finally:
            with self._cond:
                self.closed = True
                self._cond.notify_all()

    def _count_acks(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = self._sock.recv(65_536)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            acks, at = 0, 0
            while len(buffer) - at >= 2:
                length, size, shift = 0, 1, 0
                while True:  # the remaining length's varint, after the header byte
                    if at + size >= len(buffer):
                        size = -1
                        break
                    byte = buffer[at + size]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    size += 1
                    if not byte & 0x80:
                        break
                if size < 0 or len(buffer) - at < size + length:
                    break
                if buffer[at] == 0x40:
                    acks += 1
                at += size + length
            buffer = buffer[at:]
            if acks:
                with self._cond:
                    self.acked += acks
                    self.last_ack = time.time()
                    self._cond.notify_all()

    def prepare(self, messages: Iterable[tuple[str, bytes]]) -> int:
        """Build the PUBLISH packets for every (topic, payload), in order, before the clock
        starts; return how many."""
        self._packets = [
            publish_packet(topic, payload, n)
            for n, (topic, payload) in enumerate(messages, start=1)
        ]
        if len(self._packets) > MAX_PACKET_ID:
            raise ValueError(f"one connection publishes at most {MAX_PACKET_ID} messages")
        return len(self._packets)

    def publish(self) -> int:
        """Publish the prepared packets at QoS 1 within the window; return how many."""
        packets = self._packets
        sent = 0
        while sent < len(packets):
            with self._cond:
                while sent - self.acked >= self.window and not self.closed:
                    self._cond.wait(1.0)
                if self.closed:
                    raise ConnectionError(f"the broker closed the connection after {sent}")
                room = self.window - (sent - self.acked)
            self._sock.sendall(b"".join(packets[sent : sent + room]))
            sent += min(room, len(packets) - sent)
        return sent

    def wait_acked(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.acked < count and time.monotonic() < deadline and not self.closed:
                self._cond.wait(0.1)
            return self.acked >= count

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendall(b"\xe0\x00")  # DISCONNECT
        self._sock.close()
        self._reader.join(2)
