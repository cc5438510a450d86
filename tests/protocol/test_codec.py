"""The JSON codec: round trips of every message, and every way a payload can be wrong.

Whatever arrives, ``decode_*`` returns a message or raises ``RemoteProtocolError`` with a
stable ``code`` and the ``path`` of the field at fault; nothing else may escape.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.codec import (
    ALL_MESSAGES,
    MAX_NESTING,
    MAX_PAYLOAD_BYTES,
    decode,
    decode_any,
    decode_controller_message,
    decode_device_message,
    decode_uplink,
    encode,
    message_to_object,
    parse_json,
)
from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.messages import (
    COMMAND_ARGS,
    CONTROLLER_MESSAGES,
    DEVICE_MESSAGES,
    EVENT_DATA,
    Birth,
    Command,
    CommandResult,
    CompartmentState,
    DoorState,
    Event,
    LockState,
    Presence,
    PresenceState,
    RefusalReason,
    ResultStatus,
    SizeClass,
    Tamper,
    TemperatureClass,
)
from protocol.topics import Channel, TopicLayout
from tests.protocol.protocol_strategies import (
    ALL_TYPES,
    FAST,
    THOROUGH,
    dataclass_strategy,
    json_values,
)

DECODERS: list[Callable[[bytes], Any]] = [
    decode_any,
    decode_device_message,
    decode_controller_message,
    lambda p: decode(p, {"presence": Presence}),
]

PRESENCE = Presence("L-1", 7, 3, 1, PresenceState.ONLINE, 1_700_000_000_000)
TELEMETRY_OBJ: dict[str, Any] = {
    "v": 1,
    "type": "telemetry",
    "locker_id": "L-1",
    "boot_id": 7,
    "seq": 3,
    "ts": 1_700_000_000_000,
    "uptime_s": 60,
    "power": "mains",
    "battery_pct": 100,
    "rssi_dbm": -70,
    "doors_open": 0,
    "pending_events": 0,
    "events_dropped_total": 0,
    "temperatures": [{"compartment": "C01", "deci_celsius": 41}],
}
BIRTH_OBJ: dict[str, Any] = {
    "v": 1,
    "type": "birth",
    "locker_id": "L-1",
    "boot_id": 7,
    "seq": 1,
    "ts": 1,
    "firmware": "1.0.0",
    "model": "m",
    "connection": 1,
    "code_cache_version": 0,
    "config_version": 0,
    "pending_events": 0,
    "compartments": [
        {
            "id": "A01",
            "size": "S",
            "temperature": "ambient",
            "door": "closed",
            "lock": "locked",
            "occupied": False,
            "in_service": True,
        },
        {
            "id": "A02",
            "size": "M",
            "temperature": "ambient",
            "door": "closed",
            "lock": "locked",
            "occupied": False,
            "in_service": True,
        },
    ],
}


def raw(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def rejected(payload: bytes, decoder: Callable[[bytes], Any] = decode_any) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        decoder(payload)
    return info.value


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("message_type", sorted(ALL_TYPES))
@given(data=st.data())
@THOROUGH
def test_every_message_type_round_trips(message_type: str, data: st.DataObject) -> None:
    message = data.draw(dataclass_strategy(ALL_TYPES[message_type]))
    payload = encode(message)
    assert decode_any(payload) == message
    direction = DEVICE_MESSAGES if message_type in DEVICE_MESSAGES else CONTROLLER_MESSAGES
    assert decode(payload, direction) == message
    assert json.loads(payload) == message_to_object(message)
    assert payload == encode(decode_any(payload))  # deterministic


@pytest.mark.parametrize("kind", sorted(EVENT_DATA))
@given(data=st.data())
@FAST
def test_every_event_kind_round_trips(kind: str, data: st.DataObject) -> None:
    body = data.draw(dataclass_strategy(EVENT_DATA[kind]))
    event = Event.of("L-1", 1, 1, 0, body)
    assert event.event == kind
    assert decode_device_message(encode(event)) == event


@pytest.mark.parametrize("action", sorted(COMMAND_ARGS))
@given(data=st.data())
@FAST
def test_every_command_action_round_trips(action: str, data: st.DataObject) -> None:
    args = data.draw(dataclass_strategy(COMMAND_ARGS[action]))
    command = Command.of("L-1", "cmd-00000001", 1, 0, 1, args)
    assert command.action == action
    assert decode_controller_message(encode(command)) == command


def test_encoding_is_compact_utf8_with_v_and_type_first() -> None:
    event = Event.of("L-1", 1, 2, 3, Tamper("倾斜"))
    payload = encode(event)
    assert payload.startswith(b'{"v":1,"type":"event",')
    assert "倾斜".encode() in payload
    assert b" " not in payload


def test_optional_fields_are_omitted_and_a_required_null_is_written() -> None:
    result = CommandResult(
        "L-1", 1, 1, 0, None, ResultStatus.REFUSED, reason=RefusalReason.MALFORMED
    )
    obj = json.loads(encode(result))
    assert obj["command_id"] is None
    assert "outcome" not in obj
    assert "compartment" not in obj
    assert decode_device_message(encode(result)) == result


def test_a_present_null_for_an_optional_field_is_accepted() -> None:
    obj = dict(BIRTH_OBJ, code_staging=None)
    birth = decode_any(raw(obj))
    assert isinstance(birth, Birth)
    assert birth.code_staging is None


def test_unknown_fields_are_ignored_at_every_level() -> None:
    obj = json.loads(raw(TELEMETRY_OBJ))
    obj["firmware_extra"] = {"nested": [1, 2, {"x": None}]}
    obj["temperatures"][0]["probe"] = "pt100"
    assert decode_any(raw(obj)) == decode_any(raw(TELEMETRY_OBJ))


def test_whitespace_and_member_order_do_not_matter() -> None:
    reordered = dict(reversed(list(TELEMETRY_OBJ.items())))
    pretty = json.dumps(reordered, indent=4).encode()
    assert decode_any(pretty) == decode_any(raw(TELEMETRY_OBJ))


# ---------------------------------------------------------------------------------------------
# Rejections: code and path
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"", "malformed_json"),
        (b"{", "malformed_json"),
        (b"{'v': 1}", "malformed_json"),
        (b'{"v":1,}', "malformed_json"),
        (b"\xff\xfe{}", "malformed_json"),
        (b'{"v":1,"type":"presence\xc3"}', "malformed_json"),
        (b'{"v":1,"v":1}', "malformed_json"),
        (b'{"v":1,"type":"telemetry","x":{"a":1,"a":2}}', "malformed_json"),
        (b'{"v":1,"type":"telemetry","x":NaN}', "malformed_json"),
        (b'{"v":1,"type":"telemetry","x":Infinity}', "malformed_json"),
        (b'{"v":1,"type":"telemetry","x":-Infinity}', "malformed_json"),
        (b"[" * 10_000 + b"]" * 10_000, "too_large"),
        (b"[" * 5000 + b"]" * 5000, "malformed_json"),
        (b'{"a":' * 2500 + b"1" + b"}" * 2500, "malformed_json"),
        (b"[1,2]", "not_an_object"),
        (b'"presence"', "not_an_object"),
        (b"null", "not_an_object"),
        (b"42", "not_an_object"),
    ],
)
def test_malformed_payloads(payload: bytes, code: str) -> None:
    for decoder in DECODERS:
        error = rejected(payload, decoder)
        assert error.code == code
        assert error.path == ""
        assert str(error)


def test_nesting_up_to_the_limit_is_accepted_and_beyond_it_rejected() -> None:
    def message_nested(depth: int) -> bytes:
        """A telemetry message whose deepest value sits ``depth`` levels down."""
        value: Any = 0
        for _ in range(depth - 1):  # the message object itself is level 1
            value = [value]
        return raw(dict(TELEMETRY_OBJ, extra=value))

    assert decode_any(message_nested(MAX_NESTING))
    error = rejected(message_nested(MAX_NESTING + 1))
    assert (error.code, error.path) == ("malformed_json", "")


def test_payload_size_limit_is_exact() -> None:
    base = raw(dict(TELEMETRY_OBJ, pad=""))
    fill = MAX_PAYLOAD_BYTES - len(base)
    assert decode_any(raw(dict(TELEMETRY_OBJ, pad="x" * fill)))
    error = rejected(raw(dict(TELEMETRY_OBJ, pad="x" * (fill + 1))))
    assert error.code == "too_large"
    assert str(MAX_PAYLOAD_BYTES) in error.message


@pytest.mark.parametrize(
    ("change", "code", "path"),
    [
        ({"v": None}, "missing_field", "v"),
        ({"v": 2}, "unsupported_version", "v"),
        ({"v": 0}, "unsupported_version", "v"),
        ({"v": 1.0}, "invalid_field", "v"),
        ({"v": True}, "invalid_field", "v"),
        ({"v": "1"}, "invalid_field", "v"),
        ({"type": None}, "missing_field", "type"),
        ({"type": 5}, "invalid_field", "type"),
        ({"type": "telemetry2"}, "unknown_type", "type"),
        ({"type": "TELEMETRY"}, "unknown_type", "type"),
        ({"seq": "3"}, "invalid_field", "seq"),
        ({"seq": 3.0}, "invalid_field", "seq"),
        ({"seq": 3.5}, "invalid_field", "seq"),
        ({"seq": True}, "invalid_field", "seq"),
        ({"seq": -1}, "invalid_field", "seq"),
        ({"seq": 2**53}, "invalid_field", "seq"),
        ({"boot_id": 0}, "invalid_field", "boot_id"),
        ({"boot_id": 2**32}, "invalid_field", "boot_id"),
        ({"battery_pct": 101}, "invalid_field", "battery_pct"),
        ({"rssi_dbm": 1}, "invalid_field", "rssi_dbm"),
        ({"power": "solar"}, "invalid_field", "power"),
        ({"power": None}, "invalid_field", "power"),
        ({"locker_id": "a/b"}, "invalid_field", "locker_id"),
        ({"locker_id": "-abc"}, "invalid_field", "locker_id"),
        ({"locker_id": "x" * 65}, "invalid_field", "locker_id"),
        ({"locker_id": "L-1\n"}, "invalid_field", "locker_id"),
        ({"temperatures": {}}, "invalid_field", "temperatures"),
        ({"temperatures": [5]}, "invalid_field", "temperatures[0]"),
        (
            {"temperatures": [{"compartment": "C01"}]},
            "missing_field",
            "temperatures[0].deci_celsius",
        ),
        (
            {"temperatures": [{"compartment": "C01", "deci_celsius": 4.1}]},
            "invalid_field",
            "temperatures[0].deci_celsius",
        ),
        (
            {"temperatures": [{"compartment": "C01", "deci_celsius": 1001}]},
            "invalid_field",
            "temperatures[0].deci_celsius",
        ),
    ],
)
def test_bad_fields_are_named(change: dict[str, Any], code: str, path: str) -> None:
    obj = {**TELEMETRY_OBJ, **change}
    obj = {k: v for k, v in obj.items() if v is not None or k not in ("v", "type")}
    error = rejected(raw(obj))
    assert (error.code, error.path) == (code, path)
    assert path in str(error)


def test_floats_are_named_as_such() -> None:
    error = rejected(raw({**TELEMETRY_OBJ, "uptime_s": 1e3}))
    assert (error.code, error.path) == ("invalid_field", "uptime_s")
    assert "float" in error.message


def test_integers_written_with_an_exponent_are_floats() -> None:
    payload = raw(TELEMETRY_OBJ).replace(b'"uptime_s": 60', b'"uptime_s": 6E1')
    assert rejected(payload).path == "uptime_s"


def _required_fields(cls: type[Any]) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]


@pytest.mark.parametrize("message_type", sorted(ALL_TYPES))
@given(data=st.data())
@FAST
def test_every_missing_required_field_is_named(message_type: str, data: st.DataObject) -> None:
    cls = ALL_TYPES[message_type]
    obj = message_to_object(data.draw(dataclass_strategy(cls)))
    field = data.draw(st.sampled_from(_required_fields(cls)))
    del obj[field]
    error = rejected(raw(obj))
    assert (error.code, error.path) == ("missing_field", field)


def test_paths_reach_into_event_bodies_and_arrays() -> None:
    event = {
        "v": 1,
        "type": "event",
        "locker_id": "L-1",
        "boot_id": 1,
        "seq": 1,
        "ts": 1,
        "event": "pickup",
        "data": {"compartment": "A01", "code_hash": "0" * 64, "parcel_ref": "P1"},
    }
    error = rejected(raw(event))
    assert (error.code, error.path) == ("missing_field", "data.offline")
    error = rejected(raw({**event, "event": "door_exploded"}))
    assert (error.code, error.path) == ("invalid_field", "event")
    error = rejected(raw({**event, "data": None}))
    assert (error.code, error.path) == ("invalid_field", "data")

    birth = json.loads(raw(BIRTH_OBJ))
    birth["compartments"][1]["size"] = "XXL"
    error = rejected(raw(birth))
    assert (error.code, error.path) == ("invalid_field", "compartments[1].size")


def test_rules_between_fields_are_enforced() -> None:
    birth = json.loads(raw(BIRTH_OBJ))
    birth["compartments"][1]["id"] = "A01"
    error = rejected(raw(birth))
    assert error.code == "invalid_field"
    assert "unique" in error.message

    refusal = {
        "v": 1,
        "type": "result",
        "locker_id": "L-1",
        "boot_id": 1,
        "seq": 1,
        "ts": 1,
        "command_id": None,
        "status": "refused",
    }
    error = rejected(raw(refusal))
    assert error.code == "invalid_field"
    assert "reason" in error.message


def test_a_lone_surrogate_is_rejected_rather_than_crashing_encode() -> None:
    payload = (
        b'{"v":1,"type":"event","locker_id":"L-1","boot_id":1,"seq":1,"ts":1,'
        b'"event":"tamper","data":{"detail":"\\ud800"}}'
    )
    error = rejected(payload)
    assert (error.code, error.path) == ("invalid_field", "data.detail")
    paired = payload.replace(b"\\ud800", b"\\ud83d\\ude00")
    event = decode_any(paired)
    assert decode_any(encode(event)) == event


def test_each_direction_rejects_the_other_directions_messages() -> None:
    error = rejected(encode(PRESENCE), decode_controller_message)
    assert (error.code, error.path) == ("unknown_type", "type")
    assert "command" in error.message
    assert decode_device_message(encode(PRESENCE)) == PRESENCE


def test_parse_json_returns_the_object() -> None:
    assert parse_json(b' {"a": [1, "\\u00e9"]} ') == {"a": [1, "é"]}


def test_encode_refuses_a_message_over_the_size_limit() -> None:
    compartments = tuple(
        CompartmentState(
            f"{i:08d}",
            SizeClass.XL,
            TemperatureClass.AMBIENT,
            DoorState.CLOSED,
            LockState.RELEASED,
            False,
            False,
            -500,
        )
        for i in range(150)
    )
    birth = Birth("L-1", 1, 1, 1, "1.0.0", "m", 1, 0, 0, 0, compartments)
    with pytest.raises(LocalProtocolError) as info:
        encode(birth)
    assert info.value.code == "too_large"


def test_invalid_messages_cannot_be_constructed() -> None:
    with pytest.raises(ValueError, match="seq"):
        Presence("L-1", 1, -1, 1, PresenceState.ONLINE, 0)
    with pytest.raises(ValueError, match="locker_id"):
        Presence("bad id", 1, 0, 1, PresenceState.ONLINE, 0)
    with pytest.raises(ValueError, match="detail"):
        Tamper("\ud800")


# ---------------------------------------------------------------------------------------------
# decode_uplink: the topic vouches for the locker
# ---------------------------------------------------------------------------------------------

LAYOUT = TopicLayout()


def test_decode_uplink_accepts_a_message_on_its_own_topic() -> None:
    topic = LAYOUT.locker("L-1", Channel.PRESENCE)
    assert decode_uplink(LAYOUT, topic, encode(PRESENCE)) == PRESENCE


@pytest.mark.parametrize(
    ("topic", "code", "path"),
    [
        ("lf/v1/locker/L-2/presence", "topic_mismatch", "locker_id"),
        ("lf/v1/locker/L-1/event", "topic_mismatch", "type"),
        ("lf/v1/locker/L-1/cmd", "topic_mismatch", ""),
        ("lf/v1/locker/L-1/ack", "topic_mismatch", ""),
        ("lf/v2/locker/L-1/presence", "invalid_topic", ""),
        ("lf/v1/locker/L-1/presence/x", "invalid_topic", ""),
    ],
)
def test_decode_uplink_rejects_mismatches(topic: str, code: str, path: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_uplink(LAYOUT, topic, encode(PRESENCE))
    assert (info.value.code, info.value.path) == (code, path)


# ---------------------------------------------------------------------------------------------
# Nothing but RemoteProtocolError ever escapes
# ---------------------------------------------------------------------------------------------


DECODE_CODES = {
    "too_large",
    "malformed_json",
    "not_an_object",
    "unsupported_version",
    "unknown_type",
    "missing_field",
    "invalid_field",
}


def _only_remote_errors(payload: bytes) -> None:
    """Every decoder returns a message that re-encodes, or raises a RemoteProtocolError."""
    codes: list[str] = []
    for decoder in DECODERS:
        try:
            message = decoder(payload)
        except RemoteProtocolError as exc:
            codes.append(exc.code)
            continue
        assert decode_any(encode(message)) == message
    assert set(codes) <= DECODE_CODES


@given(st.binary(max_size=300))
@THOROUGH
def test_random_bytes_raise_only_remote_protocol_errors(payload: bytes) -> None:
    _only_remote_errors(payload)


@given(json_values)
@THOROUGH
def test_random_json_raises_only_remote_protocol_errors(value: Any) -> None:
    _only_remote_errors(json.dumps(value).encode())


@given(st.sampled_from(sorted(ALL_MESSAGES)), st.dictionaries(st.text(max_size=12), json_values))
@THOROUGH
def test_random_objects_with_a_real_type_raise_only_remote_protocol_errors(
    message_type: str, body: dict[str, Any]
) -> None:
    _only_remote_errors(json.dumps({**body, "v": 1, "type": message_type}).encode())


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, (*prefix, i))
    return found


@given(st.data())
@THOROUGH
def test_valid_messages_with_one_value_replaced_raise_only_remote_protocol_errors(
    data: st.DataObject,
) -> None:
    message = data.draw(
        st.sampled_from(sorted(ALL_TYPES)).flatmap(lambda t: dataclass_strategy(ALL_TYPES[t]))
    )
    obj = message_to_object(message)
    path = data.draw(st.sampled_from(_paths(obj)))
    replacement = data.draw(json_values | st.sampled_from(["\ud800", "\x00", "é", 1.0, 2**60]))
    target: Any = obj
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = replacement
    _only_remote_errors(json.dumps(obj).encode())  # json.dumps escapes lone surrogates
