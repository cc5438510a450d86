"""The broker fixtures give a broker that really carries messages."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from controller.embedded_broker import MosquittoProcess
from protocol.urls import BrokerAddress


def _round_trip(address: BrokerAddress, topic: str) -> bytes:
    got = threading.Event()
    received: list[bytes] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2)

    def on_connect(c: mqtt.Client, _u: object, _f: object, _rc: object, _p: object) -> None:
        c.subscribe(topic, qos=1)

    def on_subscribe(c: mqtt.Client, *_: object) -> None:
        c.publish(topic, b"hello", qos=1)

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        received.append(bytes(msg.payload))
        got.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        assert got.wait(5), "no message came back through the broker"
    finally:
        client.loop_stop()
        client.disconnect()
    return received[0]


def test_shared_broker_carries_messages(mqtt_broker: BrokerAddress, topic_root: str) -> None:
    assert _round_trip(mqtt_broker, f"{topic_root}/ping") == b"hello"


def test_private_broker_can_be_stopped_and_restarted(private_broker: MosquittoProcess) -> None:
    assert _round_trip(private_broker.address, "x/ping") == b"hello"
    private_broker.stop()
    private_broker.start()
    assert _round_trip(private_broker.address, "x/ping") == b"hello"
