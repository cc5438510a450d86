"""Broker URLs as users write them."""

from __future__ import annotations

import pytest

from protocol.urls import BrokerAddress, parse_broker_url


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("mqtt://localhost", BrokerAddress("localhost", 1883)),
        ("mqtt://broker.example:1884", BrokerAddress("broker.example", 1884)),
        ("mqtts://broker.example", BrokerAddress("broker.example", 8883, tls=True)),
        ("mqtt://127.0.0.1:1883/", BrokerAddress("127.0.0.1", 1883)),
        ("mqtt://[::1]:1883", BrokerAddress("::1", 1883)),
        ("mqtt://ctl@h", BrokerAddress("h", 1883, username="ctl")),
        ("mqtt://ctl:s3cret@h:2000", BrokerAddress("h", 2000, "ctl", "s3cret")),
        ("mqtt://a%40b:p%3Aw%2F@h", BrokerAddress("h", 1883, "a@b", "p:w/")),
        ("mqtt://u:@h", BrokerAddress("h", 1883, "u", "")),
    ],
)
def test_good_urls(url: str, address: BrokerAddress) -> None:
    assert parse_broker_url(url) == address


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("", "scheme"),
        ("localhost:1883", "scheme"),
        ("http://h", "scheme"),
        ("tcp://h:1883", "scheme"),
        ("mqtt://", "no host"),
        ("mqtt://:1883", "no host"),
        ("mqtt://h:99999", "invalid broker URL"),
        ("mqtt://h:port", "invalid broker URL"),
        ("mqtt://h/topic", "expected"),
        ("mqtt://h?x=1", "expected"),
        ("mqtt://h#frag", "expected"),
    ],
)
def test_bad_urls(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint) as info:
        parse_broker_url(url)
    assert "\n" not in str(info.value)


def test_url_round_trips_and_hides_the_password() -> None:
    address = parse_broker_url("mqtts://ctl:s3cret@[::1]:8884")
    assert address.url() == "mqtts://ctl:***@[::1]:8884"
    assert "s3cret" not in repr(address.url())
    assert parse_broker_url(address.url(with_password=True)) == address
    assert BrokerAddress("h", 1883).url() == "mqtt://h:1883"
    assert BrokerAddress("h", 1883, username="u").url() == "mqtt://u@h:1883"
