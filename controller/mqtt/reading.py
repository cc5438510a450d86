"""Many MQTT packets per socket read, instead of three reads and a trip round the event loop
for every packet.

paho reads a packet with one ``recv`` for its first byte, one per byte of its length and one for
the rest. Its ``loop_read`` then returns after one packet unless QoS 1/2 messages are in flight,
and aiomqtt calls it once each time the event loop finds the socket readable. With the lockers'
streams taken at QoS 0, each message cost an ``epoll_wait``, a callback and three ``recv`` system
calls. A replica taking 5,000 messages a second spent as much CPU there as on storing them.

:func:`read_in_bulk` gives one paho client a read buffer: a ``recv`` of up to 256 KiB fills it,
paho's small reads are served from it, and ``loop_read`` goes on while it holds bytes. The
bytes and their order are exactly what the socket delivered. Errors, the end of the stream
and TLS are paho's own handling, since the buffer is filled through paho's ``_sock_recv``.
"""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

CHUNK = 256 * 1024
"""Bytes asked of the socket at a time: a few hundred typical locker messages."""
_INSTALLED = "_lockerfleet_bulk_reader"


class BulkReader:
    """The read buffer of one paho client (see :func:`read_in_bulk`)."""

    def __init__(self, client: paho.Client, chunk: int = CHUNK) -> None:
        self._client = client
        self._chunk = chunk
        self._fill = client._sock_recv  # paho's own: maps TLS and socket errors
        self._read_one = client.loop_read
        self._data = b""
        self._pos = 0
        self._sock: Any = None
        """The socket the buffered bytes came from: a new connection starts empty."""

    def pending(self) -> int:
        """Bytes read from the socket that paho has not taken yet."""
        if self._client._sock is not self._sock:
            return 0
        return len(self._data) - self._pos

    def sock_recv(self, bufsize: int) -> bytes:
        """paho's ``_sock_recv``: up to ``bufsize`` bytes, from the buffer when it has any."""
        if not self.pending():
            data = self._fill(self._chunk)  # raises BlockingIOError when there is nothing
            if not data:
                return data  # the broker closed the connection
            self._data, self._pos, self._sock = data, 0, self._client._sock
        end = self._pos + bufsize
        out = self._data[self._pos : end]
        self._pos += len(out)
        return out

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho's ``loop_read``, repeated while read bytes wait in the buffer: the socket may
        not turn readable again for them."""
        rc = self._read_one(max_packets)
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self.pending():
            rc = self._read_one(max_packets)
        return rc


def read_in_bulk(client: paho.Client, chunk: int = CHUNK) -> BulkReader:
    """Give ``client`` a read buffer of ``chunk`` bytes (before or after it connects). A
    client that has one keeps it: two buffers stacked would work but read twice as much."""
    installed = getattr(client, _INSTALLED, None)
    if isinstance(installed, BulkReader):
        return installed
    reader = BulkReader(client, chunk)
    client._sock_recv = reader.sock_recv  # type: ignore[method-assign]
    client.loop_read = reader.loop_read  # type: ignore[method-assign]
    setattr(client, _INSTALLED, reader)
    return reader


def paho_client_of(client: Any) -> paho.Client:
    """The paho client inside an aiomqtt client (aiomqtt 2 has no public hook for it)."""
    inner = getattr(client, "_client", None)
    if not isinstance(inner, paho.Client):
        raise RuntimeError("this aiomqtt has no paho client inside")
    return inner
