"""Sealed provisioning responses (docs/protocol.md §8.8): only the token's holder can open one,
any change to any field makes it fail to verify, and no keystream is used twice."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.codec import decode, encode
from protocol.messages import (
    PROVISIONING_MESSAGES,
    LockerCredentials,
    ProvisionRefusal,
    ProvisionResponse,
    ProvisionStatus,
)
from protocol.provisioning import keystream, open_response, refusal, seal_credentials
from protocol.topics import TopicLayout
from tests.protocol.protocol_strategies import FAST

TOKEN = "lfp_" + "t" * 43
LOCKER = "XZ-0001"
REQUEST = "ab" * 16
CREDENTIALS = LockerCredentials(LOCKER, "p" * 40, "01" * 32, "02" * 32, "lf/v1")


def sealed(nonce: bytes = bytes(16)) -> ProvisionResponse:
    return seal_credentials(
        CREDENTIALS, token=TOKEN, locker_id=LOCKER, request_id=REQUEST, nonce=nonce, ts=1
    )


def opened(response: ProvisionResponse, token: str = TOKEN, request: str = REQUEST) -> object:
    return open_response(response, token=token, locker_id=LOCKER, request_id=request)


def test_the_token_holder_opens_what_the_controller_sealed() -> None:
    response = decode(encode(sealed()), PROVISIONING_MESSAGES)
    assert isinstance(response, ProvisionResponse)
    assert opened(response) == CREDENTIALS
    assert CREDENTIALS.command_key not in encode(response).decode()


def test_another_token_another_request_or_another_locker_opens_nothing() -> None:
    response = sealed()
    assert opened(response, token=TOKEN[:-1] + "u") is None
    assert opened(response, request="cd" * 16) is None
    assert open_response(response, token=TOKEN, locker_id="XZ-0002", request_id=REQUEST) is None


@given(st.sampled_from(["locker_id", "request_id", "nonce", "ts", "sealed", "mac"]), st.data())
@FAST
def test_any_change_to_any_field_fails_the_mac(field: str, data: st.DataObject) -> None:
    response = sealed()
    value = getattr(response, field)
    if isinstance(value, int):
        changed: Any = value + data.draw(st.integers(1, 1000))
    else:
        position = data.draw(st.integers(0, len(value) - 1))
        digit = "0" if value[position] != "0" else "1"
        changed = value[:position] + digit + value[position + 1 :]
        if field == "locker_id":
            changed = "Y" + value[1:]
    forged = dataclasses.replace(response, **{field: changed})
    assert open_response(forged, token=TOKEN, locker_id=LOCKER, request_id=REQUEST) is None


def test_a_refusal_cannot_be_turned_into_an_answer_nor_forged_without_the_token() -> None:
    refused = refusal(
        ProvisionRefusal.INVALID_TOKEN, token=TOKEN, locker_id=LOCKER, request_id=REQUEST,
        nonce=bytes(16), ts=1,
    )  # fmt: skip
    assert opened(refused) is ProvisionRefusal.INVALID_TOKEN
    other = dataclasses.replace(refused, reason=ProvisionRefusal.UNAVAILABLE)
    assert opened(other) is None
    forged = refusal(
        ProvisionRefusal.INVALID_TOKEN, token="lfp_guess1234", locker_id=LOCKER,
        request_id=REQUEST, nonce=bytes(16), ts=1,
    )  # fmt: skip
    assert opened(forged) is None


def test_every_response_has_its_own_keystream() -> None:
    one, two = sealed(bytes(16)), sealed(b"\x01" + bytes(15))
    assert one.sealed != two.sealed
    stream = keystream(b"k" * 32, bytes(16), 100)
    assert len(stream) == 100 and stream[:32] != stream[32:64]
    with pytest.raises(ValueError, match="nonce"):
        sealed(b"short")


def test_a_response_says_ok_with_sealed_data_or_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="sealed"):
        dataclasses.replace(sealed(), sealed=None)
    with pytest.raises(ValueError, match="reason"):
        dataclasses.replace(sealed(), status=ProvisionStatus.REFUSED)


def test_provisioning_topics() -> None:
    layout = TopicLayout("lf/v1")
    assert layout.provision_request(LOCKER) == "lf/v1/provision/XZ-0001/request"
    assert layout.parse_provision_request("lf/v1/provision/XZ-0001/request") == LOCKER
    for bad in ("lf/v1/provision/XZ-0001/response", "lf/v1/provision/a/b/request", "x"):
        with pytest.raises(Exception, match="not a provisioning request topic"):
            layout.parse_provision_request(bad)
