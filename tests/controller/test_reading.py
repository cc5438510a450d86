"""The bridge's bulk reads: many MQTT packets per socket read (controller/mqtt/reading.py).

paho's own parser runs on the buffered bytes. Over a real socket pair, every packet must come
out whole and in order, however the bytes are cut. What is already buffered must be delivered
in the same call, because the socket will not wake the event loop again for it. A closed
connection must still be reported as lost. Then the same through a real Mosquitto.
"""

from __future__ import annotations

import asyncio
import select
import socket
import struct
from collections.abc import Iterator

import aiomqtt
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from controller.mqtt.reading import paho_client_of, read_in_bulk
from protocol.urls import BrokerAddress


def publish_packet(topic: str, payload: bytes) -> bytes:
    """A QoS 0 PUBLISH as a broker sends it."""
    body = struct.pack("!H", len(topic)) + topic.encode() + payload
    length, n = bytearray(), len(body)
    while True:
        digit, n = n % 128, n // 128
        length.append(digit | (0x80 if n else 0))
        if not n:
            break
    return b"\x30" + bytes(length) + body


def packets(payloads: list[bytes], topic: str = "lf/v1/locker/L1/event") -> bytes:
    """The bytes a broker writes to deliver ``payloads`` on ``topic``, back to back."""
    return b"".join(publish_packet(topic, p) for p in payloads)


def payloads(count: int) -> list[bytes]:
    # Sizes from 0 to 300 bytes: lengths of one and two bytes, packets cut anywhere.
    return [f"{n:05d}".encode() + b"x" * (n * 37 % 300) for n in range(count)]


def readable(client: paho.Client) -> bool:
    sock = client.socket()
    assert isinstance(sock, socket.socket)
    return bool(select.select([sock], [], [], 0)[0])


def drive(client: paho.Client) -> MQTTErrorCode:
    """What the event loop does: call ``loop_read`` while the socket is readable."""
    rc = client.loop_read()
    while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and readable(client):
        rc = client.loop_read()
    return rc


@pytest.fixture
def wired() -> Iterator[tuple[paho.Client, socket.socket, list[bytes]]]:
    """A paho client reading one end of a socket pair; the test writes the broker's end."""
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="reader")
    received: list[bytes] = []
    client.on_message = lambda _c, _u, m: received.append(bytes(m.payload))
    client._sock = ours
    yield client, broker, received
    broker.close()
    ours.close()


def test_everything_already_read_is_delivered_in_one_call(
    wired: tuple[paho.Client, socket.socket, list[bytes]],
) -> None:
    client, broker, received = wired
    read_in_bulk(client)
    sent = payloads(500)
    broker.sendall(packets(sent))
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    # paho alone delivers one packet per call, and the socket would not wake us for the rest.
    assert received == sent


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_packets_cut_at_any_byte_come_out_whole_and_in_order(
    wired: tuple[paho.Client, socket.socket, list[bytes]], chunk: int
) -> None:
    client, broker, received = wired
    read_in_bulk(client, chunk=chunk)
    sent = payloads(120)
    stream = b"".join(publish_packet(f"lf/v1/locker/L{n}/event", p) for n, p in enumerate(sent))
    for start in range(0, len(stream), 333):  # the broker's writes cut packets too
        broker.sendall(stream[start : start + 333])
        assert drive(client) == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert received == sent
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS  # nothing more: no error
    assert received == sent


def test_a_client_gets_one_buffer_however_often_it_is_asked(
    wired: tuple[paho.Client, socket.socket, list[bytes]],
) -> None:
    client, broker, received = wired
    first = read_in_bulk(client)
    assert read_in_bulk(client) is first
    sent = payloads(50)
    broker.sendall(packets(sent))
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert received == sent


def test_a_new_connection_reads_its_own_socket_from_a_clean_start(
    wired: tuple[paho.Client, socket.socket, list[bytes]],
) -> None:
    client, broker, received = wired
    reader = read_in_bulk(client)
    whole = publish_packet("lf/v1/locker/L1/event", b"old")
    broker.sendall(whole + whole[:5])  # one packet and the start of another
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert received == [b"old"]
    # A reconnect: paho forgets its partial packet and reads a new socket.
    fresh, fresh_broker = socket.socketpair()
    fresh.setblocking(False)
    client._sock = fresh
    client._in_packet = {"command": 0, "have_remaining": 0, "remaining_count": [],
                         "remaining_mult": 1, "remaining_length": 0, "packet": bytearray(b""),
                         "to_process": 0, "pos": 0}  # fmt: skip
    assert reader.pending() == 0
    fresh_broker.sendall(publish_packet("lf/v1/locker/L1/event", b"new"))
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert received == [b"old", b"new"]
    fresh.close()
    fresh_broker.close()


def test_a_closed_connection_is_lost_after_what_came_before_it(
    wired: tuple[paho.Client, socket.socket, list[bytes]],
) -> None:
    client, broker, received = wired
    read_in_bulk(client)
    sent = payloads(3)
    broker.sendall(packets(sent))
    broker.shutdown(socket.SHUT_WR)
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert received == sent
    # The end of the stream leaves the socket readable: the next call reports it.
    assert readable(client)
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_CONN_LOST
    assert received == sent


@pytest.mark.mqtt
async def test_a_burst_through_mosquitto_arrives_whole_and_in_order(
    mqtt_broker: BrokerAddress, topic_root: str
) -> None:
    """A smoke test with a real broker and aiomqtt's own reader callback (it would pass
    without the buffer too; the socket-pair tests above are the ones that need it)."""
    sent = payloads(3000)
    topic = f"{topic_root}/locker/L1/event"
    received: list[bytes] = []
    done = asyncio.Event()

    def on_message(_c: object, _u: object, m: paho.MQTTMessage) -> None:
        received.append(bytes(m.payload))
        if len(received) == len(sent):
            done.set()

    address = dict(
        hostname=mqtt_broker.host,
        port=mqtt_broker.port,
        username=mqtt_broker.username,
        password=mqtt_broker.password,
    )
    async with (
        aiomqtt.Client(**address, identifier="bulk-reader") as reader,  # type: ignore[arg-type]
        aiomqtt.Client(**address, identifier="bulk-writer") as writer,  # type: ignore[arg-type]
    ):
        inner = paho_client_of(reader)
        inner.on_message = on_message
        read_in_bulk(inner)
        await reader.subscribe(topic, qos=0)
        for payload in sent:
            await writer.publish(topic, payload, qos=0)
        async with asyncio.timeout(20):
            await done.wait()
    assert received == sent
