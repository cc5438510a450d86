"""Command authentication: every refusal with its reason, the window, repeats, signed acks."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.auth import (
    ACK_DOMAIN,
    CLOCK_TOLERANCE_MS,
    COMMAND_DOMAIN,
    KEY_BYTES,
    ReplayWindow,
    check_ack,
    check_command,
    encode_signed_ack,
    freshness,
    new_key,
    sign_ack,
    sign_command,
    signing_input,
)
from protocol.codec import encode, message_to_object
from protocol.messages import (
    MAX_COMMAND_LIFETIME_MS,
    Ack,
    Command,
    CommandArgs,
    OpenCompartment,
    OpenPurpose,
    RefusalReason,
    RequestRebirth,
    SeqRange,
)
from tests.protocol.protocol_strategies import FAST, THOROUGH, dataclass_strategy, json_values

KEY = bytes(range(KEY_BYTES))
OTHER_KEY = bytes(range(1, KEY_BYTES + 1))
LOCKER = "L-1"
NOW = 1_777_622_400_000
OPEN = OpenCompartment("A01", OpenPurpose.PICKUP)


def command(
    counter: int = 110,
    *,
    command_id: str = "cmd-00000110",
    locker_id: str = LOCKER,
    issued_at: int = NOW,
    expires_at: int = NOW + 60_000,
    args: CommandArgs = OPEN,
    key: bytes = KEY,
) -> Command:
    unsigned = Command.of(locker_id, command_id, counter, issued_at, expires_at, args)
    return sign_command(unsigned, key)


def sign_raw(obj: dict[str, Any], key: bytes = KEY) -> dict[str, Any]:
    """Sign an arbitrary object the way the controller would (for payloads the codec refuses)."""
    mac = hmac.new(key, signing_input(COMMAND_DOMAIN, obj), hashlib.sha256).hexdigest()
    return {**obj, "sig": mac}


def check(payload: bytes | dict[str, Any], window: ReplayWindow, now_ms: int = NOW) -> Any:
    return check_command(payload, locker_id=LOCKER, key=KEY, now_ms=now_ms, window=window)


def snapshot(window: ReplayWindow) -> ReplayWindow:
    return copy.deepcopy(window)


@pytest.fixture
def window() -> ReplayWindow:
    """A window that has taken counters 90 and 100 already."""
    w = ReplayWindow()
    w.accept(90, "cmd-00000090")
    w.accept(100, "cmd-00000100")
    return w


# ---------------------------------------------------------------------------------------------
# Accepted
# ---------------------------------------------------------------------------------------------


@given(dataclass_strategy(Command))
@THOROUGH
def test_every_signed_command_is_accepted_once(generated: Command) -> None:
    signed = sign_command(dataclasses.replace(generated, sig=""), KEY)
    window = ReplayWindow()
    verdict = check_command(
        encode(signed),
        locker_id=signed.locker_id,
        key=KEY,
        now_ms=signed.issued_at,
        window=window,
    )
    if signed.expires_at - signed.issued_at > MAX_COMMAND_LIFETIME_MS:
        assert verdict.reason is RefusalReason.LIFETIME_TOO_LONG
        return
    assert verdict.accepted
    assert verdict.command == signed
    assert (window.highest, window.seen) == (signed.counter, 1)
    again = check_command(
        encode(signed), locker_id=signed.locker_id, key=KEY, now_ms=signed.issued_at, window=window
    )
    assert again.repeat
    assert not again.accepted
    assert not again.refused


def test_the_dict_form_of_a_payload_is_accepted(window: ReplayWindow) -> None:
    verdict = check(message_to_object(command()), window)
    assert verdict.accepted


def test_signature_covers_unknown_fields() -> None:
    obj = sign_raw({**message_to_object(command()), "priority": "high"})
    assert check(obj, ReplayWindow()).accepted
    stripped = {k: v for k, v in obj.items() if k != "priority"}
    assert check(stripped, ReplayWindow()).reason is RefusalReason.BAD_SIGNATURE


def test_member_order_and_whitespace_do_not_affect_the_signature() -> None:
    obj = message_to_object(command())
    shuffled = json.dumps(dict(reversed(list(obj.items()))), indent=3).encode()
    assert check(shuffled, ReplayWindow()).accepted


def test_new_keys_are_random_and_the_right_size() -> None:
    assert len(new_key()) == KEY_BYTES
    assert new_key() != new_key()


# ---------------------------------------------------------------------------------------------
# Refused, each with its reason, and the window untouched
# ---------------------------------------------------------------------------------------------


def _flip_last_hex(sig: str) -> str:
    return sig[:-1] + ("0" if sig[-1] != "0" else "1")


def _refusals() -> list[tuple[str, bytes | dict[str, Any], RefusalReason, str | None]]:
    good = message_to_object(command())
    cases: list[tuple[str, bytes | dict[str, Any], RefusalReason, str | None]] = [
        ("not json", b"open A01 please", RefusalReason.MALFORMED, None),
        ("not an object", b"[1]", RefusalReason.MALFORMED, None),
        ("too large", b'{"x":"' + b"a" * 17_000 + b'"}', RefusalReason.MALFORMED, None),
        ("not a command", {**good, "type": "ack"}, RefusalReason.MALFORMED, "cmd-00000110"),
        (
            "no version",
            {k: v for k, v in good.items() if k != "v"},
            RefusalReason.MALFORMED,
            "cmd-00000110",
        ),
        ("float version", {**good, "v": 1.0}, RefusalReason.MALFORMED, "cmd-00000110"),
        ("version 2", {**good, "v": 2}, RefusalReason.UNSUPPORTED_VERSION, "cmd-00000110"),
        (
            "unsigned",
            {k: v for k, v in good.items() if k != "sig"},
            RefusalReason.UNSIGNED,
            "cmd-00000110",
        ),
        ("empty sig", {**good, "sig": ""}, RefusalReason.UNSIGNED, "cmd-00000110"),
        (
            "forged sig",
            {**good, "sig": _flip_last_hex(good["sig"])},
            RefusalReason.BAD_SIGNATURE,
            "cmd-00000110",
        ),
        ("sig not a string", {**good, "sig": 12345}, RefusalReason.BAD_SIGNATURE, "cmd-00000110"),
        (
            "signed with another key",
            message_to_object(command(key=OTHER_KEY)),
            RefusalReason.BAD_SIGNATURE,
            "cmd-00000110",
        ),
        (
            "altered after signing",
            {**good, "args": {**good["args"], "compartment": "B07"}},
            RefusalReason.BAD_SIGNATURE,
            "cmd-00000110",
        ),
        (
            "signed as an ack",
            {
                **good,
                "sig": hmac.new(KEY, signing_input(ACK_DOMAIN, good), hashlib.sha256).hexdigest(),
            },
            RefusalReason.BAD_SIGNATURE,
            "cmd-00000110",
        ),
        (
            "float in payload",
            {**good, "counter": 10.0},
            RefusalReason.BAD_SIGNATURE,
            "cmd-00000110",
        ),
        (
            "unknown action",
            sign_raw({**good, "action": "open_all", "args": {}}),
            RefusalReason.UNKNOWN_ACTION,
            "cmd-00000110",
        ),
        (
            "missing action",
            sign_raw({k: v for k, v in good.items() if k not in ("action", "sig")}),
            RefusalReason.UNKNOWN_ACTION,
            "cmd-00000110",
        ),
        (
            "args of another action",
            sign_raw({**good, "action": "sync_codes"}),
            RefusalReason.MALFORMED,
            "cmd-00000110",
        ),
        (
            "bad field",
            sign_raw({**good, "counter": 0}),
            RefusalReason.MALFORMED,
            "cmd-00000110",
        ),
        ("unreadable id", sign_raw({**good, "command_id": "x"}), RefusalReason.MALFORMED, None),
        (
            "wrong locker",
            message_to_object(command(locker_id="L-2")),
            RefusalReason.WRONG_LOCKER,
            "cmd-00000110",
        ),
        (
            "expired",
            message_to_object(command(issued_at=NOW - 60_001, expires_at=NOW - 1)),
            RefusalReason.EXPIRED,
            "cmd-00000110",
        ),
        (
            "not yet valid",
            message_to_object(
                command(issued_at=NOW + CLOCK_TOLERANCE_MS + 1, expires_at=NOW + 3_600_000)
            ),
            RefusalReason.NOT_YET_VALID,
            "cmd-00000110",
        ),
        (
            "lifetime too long",
            message_to_object(command(expires_at=NOW + MAX_COMMAND_LIFETIME_MS + 1)),
            RefusalReason.LIFETIME_TOO_LONG,
            "cmd-00000110",
        ),
        (
            "replayed counter",
            message_to_object(command(90, command_id="cmd-new-id-9")),
            RefusalReason.REPLAYED,
            "cmd-new-id-9",
        ),
        (
            "counter too old",
            message_to_object(command(100 - 64, command_id="cmd-ancient")),
            RefusalReason.COUNTER_TOO_OLD,
            "cmd-ancient",
        ),
    ]
    return cases


@pytest.mark.parametrize(
    ("payload", "reason", "command_id"),
    [pytest.param(p, r, c, id=name) for name, p, r, c in _refusals()],
)
def test_refusals_give_the_right_reason_and_leave_the_window_unchanged(
    window: ReplayWindow,
    payload: bytes | dict[str, Any],
    reason: RefusalReason,
    command_id: str | None,
) -> None:
    before = snapshot(window)
    as_bytes = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    verdict = check(as_bytes, window)
    assert verdict.reason is reason
    assert verdict.refused
    assert not verdict.accepted
    assert not verdict.repeat
    assert verdict.command_id == command_id
    assert window == before


def test_a_refusal_after_field_validation_carries_the_command() -> None:
    verdict = check(encode(command(locker_id="L-2")), ReplayWindow())
    assert verdict.reason is RefusalReason.WRONG_LOCKER
    assert verdict.command is not None
    assert verdict.command.action == "open_compartment"


def test_validity_boundaries_are_inclusive() -> None:
    assert check(encode(command(issued_at=NOW - 60_000, expires_at=NOW)), ReplayWindow()).accepted
    future = command(issued_at=NOW + CLOCK_TOLERANCE_MS, expires_at=NOW + 3_600_000)
    assert check(encode(future), ReplayWindow()).accepted
    longest = command(expires_at=NOW + MAX_COMMAND_LIFETIME_MS)
    assert check(encode(longest), ReplayWindow()).accepted


def test_freshness_alone_checks_locker_lifetime_expiry_and_counter() -> None:
    window = ReplayWindow()
    assert freshness(command(), locker_id=LOCKER, now_ms=NOW, window=window) is None
    assert freshness(command(), locker_id="L-9", now_ms=NOW, window=window) is (
        RefusalReason.WRONG_LOCKER
    )
    late = NOW + 120_000
    assert freshness(command(), locker_id=LOCKER, now_ms=late, window=window) is (
        RefusalReason.EXPIRED
    )


def test_refusals_never_raise_on_hostile_input() -> None:
    for payload in (b"", b"\xff", b"{" * 5000, b'{"v":1,"type":"command","sig":{}}'):
        assert check(payload, ReplayWindow()).refused


@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
@THOROUGH
def test_check_command_and_check_ack_never_raise(payload: bytes) -> None:
    window = ReplayWindow()
    verdict = check(payload, window)
    assert verdict.refused
    assert window == ReplayWindow()
    assert check_ack(payload, locker_id=LOCKER, key=KEY) is None


# ---------------------------------------------------------------------------------------------
# The window: out of order, replays, repeats
# ---------------------------------------------------------------------------------------------


def test_out_of_order_counters_inside_the_window_are_accepted_once() -> None:
    window = ReplayWindow()
    for counter in (10, 5, 7, 70):
        assert check(encode(command(counter, command_id=f"cmd-{counter:08d}")), window).accepted
    # 10 is still inside the window of 70 (70 - 63 = 7 is its lowest counter)
    assert check(encode(command(8, command_id="cmd-00000008")), window).accepted
    assert check(encode(command(10, command_id="cmd-again-10")), window).reason is (
        RefusalReason.REPLAYED
    )
    assert check(encode(command(6, command_id="cmd-00000006")), window).reason is (
        RefusalReason.COUNTER_TOO_OLD
    )


def test_a_repeat_is_silent_even_when_re_signed_with_a_new_counter(window: ReplayWindow) -> None:
    first = command(101, command_id="cmd-abcdefgh")
    assert check(encode(first), window).accepted
    before = snapshot(window)
    for copy_of_it in (first, command(102, command_id="cmd-abcdefgh")):
        verdict = check(encode(copy_of_it), window)
        assert verdict.repeat
        assert verdict.reason is None
        assert verdict.command is not None
        assert not verdict.accepted
        assert not verdict.refused
        assert window == before


def test_a_repeat_of_an_expired_command_is_still_silent(window: ReplayWindow) -> None:
    first = command(101, command_id="cmd-abcdefgh")
    assert check(encode(first), window).accepted
    assert check(encode(first), window, now_ms=NOW + 3_600_000).repeat


def test_a_command_whose_counter_left_the_window_is_forgotten_and_too_old() -> None:
    window = ReplayWindow()
    first = command(1, command_id="cmd-first-1")
    assert check(encode(first), window).accepted
    assert check(encode(command(65, command_id="cmd-00000065")), window).accepted
    assert "cmd-first-1" not in window.recent
    assert check(encode(first), window).reason is RefusalReason.COUNTER_TOO_OLD


def test_the_window_remembers_at_most_its_size_of_ids() -> None:
    window = ReplayWindow()
    for counter in range(1, 300):
        window.accept(counter, f"cmd-{counter:08d}")
    assert len(window.recent) == ReplayWindow.SIZE
    assert min(window.recent.values()) == 299 - 63


def test_a_window_built_from_stored_numbers_only_still_works() -> None:
    window = ReplayWindow(70, 1)
    assert check(encode(command(70, command_id="cmd-00000070")), window).reason is (
        RefusalReason.REPLAYED
    )
    assert check(encode(command(71, command_id="cmd-00000071")), window).accepted


@given(st.lists(st.integers(min_value=1, max_value=300), max_size=60))
@THOROUGH
def test_window_matches_a_model_of_every_counter_ever_taken(counters: list[int]) -> None:
    window = ReplayWindow()
    taken: set[int] = set()
    for counter in counters:
        highest = max(taken, default=0)
        if counter in taken:
            expected = (
                RefusalReason.COUNTER_TOO_OLD
                if counter <= highest - 64
                else (RefusalReason.REPLAYED)
            )
        elif counter <= highest - 64:
            expected = RefusalReason.COUNTER_TOO_OLD
        else:
            expected = None
        assert window.check(counter) is expected
        if expected is None:
            window.accept(counter)
            taken.add(counter)
        assert window.highest == max(taken, default=0)


# ---------------------------------------------------------------------------------------------
# Acknowledgements
# ---------------------------------------------------------------------------------------------

ACK = Ack(LOCKER, 7, (SeqRange(1, 40), SeqRange(42, 42)), NOW)


def test_a_signed_ack_is_accepted() -> None:
    signed = sign_ack(ACK, KEY)
    assert check_ack(encode(signed), locker_id=LOCKER, key=KEY) == signed
    assert check_ack(message_to_object(signed), locker_id=LOCKER, key=KEY) == signed


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(encode(ACK), id="unsigned"),
        pytest.param(encode(sign_ack(ACK, OTHER_KEY)), id="other key"),
        pytest.param(
            encode(dataclasses.replace(sign_ack(ACK, KEY), ranges=(SeqRange(1, 99),))),
            id="altered ranges",
        ),
        pytest.param(
            encode(sign_ack(dataclasses.replace(ACK, locker_id="L-2"), KEY)), id="wrong locker"
        ),
        pytest.param(
            encode(
                sign_command(Command.of(LOCKER, "cmd-00000001", 1, 0, 1, RequestRebirth()), KEY)
            ),
            id="a command",
        ),
        pytest.param(
            json.dumps(
                {
                    **message_to_object(ACK),
                    "sig": hmac.new(
                        KEY,
                        signing_input(COMMAND_DOMAIN, message_to_object(ACK)),
                        hashlib.sha256,
                    ).hexdigest(),
                }
            ).encode(),
            id="signed with the command domain",
        ),
        pytest.param(b"not json", id="garbage"),
    ],
)
def test_forged_or_misaddressed_acks_are_ignored(payload: bytes) -> None:
    assert check_ack(payload, locker_id=LOCKER, key=KEY) is None


@given(dataclass_strategy(Ack))
@FAST
def test_ack_sign_and_check_round_trip(ack: Ack) -> None:
    signed = sign_ack(dataclasses.replace(ack, sig=""), KEY)
    assert encode_signed_ack(dataclasses.replace(ack, sig=""), KEY) == encode(signed)
    assert check_ack(encode(signed), locker_id=ack.locker_id, key=KEY) == signed
    assert check_ack(encode(signed), locker_id=ack.locker_id, key=OTHER_KEY) is None
