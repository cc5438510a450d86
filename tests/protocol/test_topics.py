"""The MQTT topic layout: building, parsing, roots and subscriptions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import RemoteProtocolError
from protocol.topics import (
    CHANNEL_OF_TYPE,
    DEFAULT_ROOT,
    DELIVERY,
    DOWNLINK,
    UPLINK,
    Channel,
    TopicLayout,
)
from tests.protocol.protocol_strategies import FAST

LAYOUT = TopicLayout()


def test_locker_topics() -> None:
    assert DEFAULT_ROOT == "lf/v1"
    assert LAYOUT.locker("L-1", Channel.EVENT) == "lf/v1/locker/L-1/event"
    assert LAYOUT.locker("L-1", Channel.COMMAND) == "lf/v1/locker/L-1/cmd"
    assert LAYOUT.all_lockers(Channel.TELEMETRY) == "lf/v1/locker/+/telemetry"
    assert TopicLayout("test-1/a.b").locker("x", Channel.ACK) == "test-1/a.b/locker/x/ack"


def test_controller_presence_topics() -> None:
    assert LAYOUT.controller_presence("ctl-a.1") == "lf/v1/controller/ctl-a.1/presence"
    assert LAYOUT.all_controllers() == "lf/v1/controller/+/presence"
    for bad in ("", "a/b", "+", "#", "x" * 65):
        with pytest.raises(ValueError, match="instance"):
            LAYOUT.controller_presence(bad)


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", fullmatch=True), st.sampled_from(Channel))
@FAST
def test_parse_inverts_build(locker_id: str, channel: Channel) -> None:
    assert LAYOUT.parse(LAYOUT.locker(locker_id, channel)) == (locker_id, channel)


@pytest.mark.parametrize("locker_id", ["", "a/b", "+", "#", "a+b", "-x", "x" * 65, "é"])
def test_invalid_locker_ids_cannot_make_topics(locker_id: str) -> None:
    with pytest.raises(ValueError, match="locker id"):
        LAYOUT.locker(locker_id, Channel.EVENT)


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "lf/v1",
        "lf/v1/locker/",
        "lf/v1/locker/L-1",
        "lf/v1/locker/L-1/",
        "lf/v1/locker/L-1/events",
        "lf/v1/locker/L-1/event/extra",
        "lf/v1/locker/+/event",
        "lf/v1/locker/#",
        "lf/v1/controller/c/presence",
        "lf/v2/locker/L-1/event",
        "xlf/v1/locker/L-1/event",
        "$share/g/lf/v1/locker/L-1/event",
    ],
)
def test_parse_rejects_anything_but_a_locker_topic(topic: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        LAYOUT.parse(topic)
    assert info.value.code == "invalid_topic"


@pytest.mark.parametrize("root", ["", "/lf", "lf/", "lf//v1", "lf/+", "lf/#", "l f", "$SYS"])
def test_invalid_roots_are_refused(root: str) -> None:
    with pytest.raises(ValueError, match="root"):
        TopicLayout(root)


def test_delivery_table() -> None:
    assert set(DELIVERY) == set(Channel)
    assert set(UPLINK) | set(DOWNLINK) == set(Channel)
    assert not set(UPLINK) & set(DOWNLINK)
    assert [c for c in Channel if DELIVERY[c].retain] == [Channel.PRESENCE]
    assert [c for c in Channel if DELIVERY[c].qos == 0] == [Channel.TELEMETRY]
    assert sorted(CHANNEL_OF_TYPE.values()) == sorted(Channel)


def test_controller_subscriptions_plain_and_shared() -> None:
    plain = LAYOUT.controller_subscriptions()
    assert plain == [
        ("lf/v1/locker/+/presence", 1),
        ("lf/v1/locker/+/birth", 1),
        ("lf/v1/locker/+/event", 1),
        ("lf/v1/locker/+/result", 1),
        ("lf/v1/locker/+/telemetry", 0),
    ]
    shared = LAYOUT.controller_subscriptions(share_group="ctl")
    assert shared[0] == ("lf/v1/locker/+/presence", 1)  # every replica sees retained presence
    assert shared[1:] == [(f"$share/ctl/{topic}", qos) for topic, qos in plain[1:]]


def test_controller_subscriptions_at_a_lower_stream_qos() -> None:
    """A controller may take the sequenced streams at QoS 0; presence keeps QoS 1."""
    assert LAYOUT.controller_subscriptions(stream_qos=0) == [
        ("lf/v1/locker/+/presence", 1),
        ("lf/v1/locker/+/birth", 0),
        ("lf/v1/locker/+/event", 0),
        ("lf/v1/locker/+/result", 0),
        ("lf/v1/locker/+/telemetry", 0),
    ]
    assert LAYOUT.controller_subscriptions(stream_qos=1) == LAYOUT.controller_subscriptions()


def test_locker_subscriptions() -> None:
    assert LAYOUT.locker_subscriptions("L-1") == [
        ("lf/v1/locker/L-1/cmd", 1),
        ("lf/v1/locker/L-1/ack", 1),
    ]
