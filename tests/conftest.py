"""Fixtures shared by the whole suite: real brokers, unique topic roots, databases.

* ``mqtt_broker`` (session): the broker at ``LOCKERFLEET_TEST_MQTT_URL`` when set, otherwise a
  Mosquitto this fixture starts on a free loopback port. Tests sharing it isolate themselves with
  ``topic_root`` (a unique topic root) and unique locker ids.
* ``private_broker`` (per test): a Mosquitto of the test's own, which it may stop and start to
  simulate an outage. Skipped when the binary is missing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from controller.embedded_broker import BrokerUnavailable, MosquittoProcess, find_mosquitto
from protocol.topics import TopicLayout
from protocol.urls import BrokerAddress, parse_broker_url


@pytest.fixture(scope="session")
def mqtt_broker() -> Iterator[BrokerAddress]:
    url = os.environ.get("LOCKERFLEET_TEST_MQTT_URL")
    if url:
        yield parse_broker_url(url)
        return
    if find_mosquitto() is None:
        pytest.skip("no broker: set LOCKERFLEET_TEST_MQTT_URL or install mosquitto")
    broker = MosquittoProcess()
    try:
        broker.start()
    except BrokerUnavailable as exc:
        pytest.fail(f"could not start mosquitto: {exc}")
    yield broker.address
    broker.close()


@pytest.fixture
def private_broker() -> Iterator[MosquittoProcess]:
    if find_mosquitto() is None:
        pytest.skip("the mosquitto binary is needed to stop and restart a broker")
    broker = MosquittoProcess()
    broker.start()
    yield broker
    broker.close()


@pytest.fixture
def topic_root() -> str:
    """A topic root no other test uses, so tests can share one broker."""
    return f"test-{uuid.uuid4().hex[:12]}/v1"


@pytest.fixture
def topics(topic_root: str) -> TopicLayout:
    return TopicLayout(topic_root)
