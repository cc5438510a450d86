"""Bytes to messages and back: JSON on the wire, typed dataclasses in memory.

``decode_*`` never lets anything but :class:`~protocol.errors.RemoteProtocolError` escape: too
large payloads, invalid UTF-8, malformed or duplicate-keyed JSON, NaN, nesting deeper than
:data:`MAX_NESTING`, an unknown ``type`` or ``v``, a missing or mistyped field all become one,
with a stable ``code`` and the path of the field at fault. Unknown fields are ignored.

:func:`decode_uplink` adds the checks a controller makes on what arrives on a locker's topic: the
message type belongs on that channel and the ``locker_id`` inside is the one in the topic (the
broker's access control vouches for the topic, not for the payload).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.fields import from_wire, to_wire
from protocol.messages import (
    CONTROLLER_MESSAGES,
    DEVICE_MESSAGES,
    PROTOCOL_VERSION,
    PROVISIONING_MESSAGES,
    ControllerMessage,
    DeviceMessage,
    Message,
)
from protocol.topics import CHANNEL_OF_TYPE, UPLINK, TopicLayout

MAX_PAYLOAD_BYTES = 16 * 1024
"""No message may be larger than this, on MQTT or in a serial frame."""

MAX_NESTING = 32
"""Deepest nesting of arrays and objects a payload may have (protocol messages use 4)."""

ALL_MESSAGES: dict[str, type[Any]] = {
    **DEVICE_MESSAGES,
    **CONTROLLER_MESSAGES,
    **PROVISIONING_MESSAGES,
}

M = TypeVar("M")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise RemoteProtocolError(f"duplicate key {key!r:.40}", code="malformed_json")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise RemoteProtocolError(f"{name} is not valid JSON", code="malformed_json")


def parse_json(payload: bytes) -> dict[str, Any]:
    """Return the JSON object in ``payload``.

    Raises :class:`RemoteProtocolError` with code ``too_large``, ``malformed_json`` (also for
    invalid UTF-8, duplicate keys, NaN/Infinity, nesting too deep) or ``not_an_object``.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RemoteProtocolError(
            f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}", code="too_large"
        )
    try:
        text = payload.decode("utf-8")
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except RemoteProtocolError:
        raise
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"not UTF-8: {exc.reason}", code="malformed_json") from None
    except json.JSONDecodeError as exc:
        raise RemoteProtocolError(
            f"not JSON: {exc.msg} at {exc.pos}", code="malformed_json"
        ) from None
    except RecursionError:
        raise RemoteProtocolError("JSON nested too deeply", code="malformed_json") from None
    if not isinstance(data, dict):
        raise RemoteProtocolError("payload must be a JSON object", code="not_an_object")
    # Each level of nesting needs its own bracket: with few brackets the walk can be skipped.
    brackets = payload.count(b"{") + payload.count(b"[")
    if brackets > MAX_NESTING and _nesting(data) > MAX_NESTING:
        raise RemoteProtocolError(
            f"JSON nested deeper than {MAX_NESTING} levels", code="malformed_json"
        )
    return data


def _nesting(value: Any) -> int:
    """Return how deeply arrays and objects nest in ``value`` (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_NESTING:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def message_from_object(data: Mapping[str, Any], accept: Mapping[str, type[M]]) -> M:
    """Return the typed message for an already parsed JSON object.

    ``accept`` maps the ``type`` values this receiver takes to their classes. Raises
    :class:`RemoteProtocolError` (``unsupported_version``, ``unknown_type``, ``missing_field``,
    ``invalid_field``).
    """
    version = data.get("v")
    if version is None:
        raise RemoteProtocolError("required field is missing", code="missing_field", path="v")
    if type(version) is not int:
        raise RemoteProtocolError(
            f"protocol version must be an integer, got {version!r:.20}",
            code="invalid_field",
            path="v",
        )
    if version != PROTOCOL_VERSION:
        raise RemoteProtocolError(
            f"protocol version {version!r:.20} is not supported "
            f"(this end speaks {PROTOCOL_VERSION})",
            code="unsupported_version",
            path="v",
        )
    kind = data.get("type")
    if kind is None:
        raise RemoteProtocolError("required field is missing", code="missing_field", path="type")
    if not isinstance(kind, str):
        raise RemoteProtocolError(
            f"message type must be a string, got {kind!r:.20}", code="invalid_field", path="type"
        )
    cls = accept.get(kind)
    if cls is None:
        known = ", ".join(sorted(accept))
        raise RemoteProtocolError(
            f"unknown message type {kind!r:.40}; expected one of {known}",
            code="unknown_type",
            path="type",
        )
    try:
        return from_wire(cls, dict(data))
    except RecursionError:
        raise RemoteProtocolError("message nested too deeply", code="malformed_json") from None


def decode(payload: bytes, accept: Mapping[str, type[M]]) -> M:
    """Return the message in ``payload`` if its type is one of ``accept``.

    Raises :class:`RemoteProtocolError` and nothing else.
    """
    return message_from_object(parse_json(payload), accept)


def decode_device_message(payload: bytes) -> DeviceMessage:
    """Decode what a locker sends (presence, birth, event, telemetry, result)."""
    return decode(payload, DEVICE_MESSAGES)


def decode_controller_message(payload: bytes) -> ControllerMessage:
    """Decode what a controller sends (command, ack, controller presence)."""
    return decode(payload, CONTROLLER_MESSAGES)


def decode_any(payload: bytes) -> Message:
    """Decode any message of the protocol (for tools that watch both directions)."""
    return decode(payload, ALL_MESSAGES)  # type: ignore[no-any-return]


def decode_uplink(layout: TopicLayout, topic: str, payload: bytes) -> DeviceMessage:
    """Decode what arrived on a locker's uplink ``topic``, as a controller must.

    Returns the message. Raises :class:`RemoteProtocolError`: ``invalid_topic`` for a topic
    that is not a locker's; ``topic_mismatch`` for a downlink channel, a message type that
    belongs on another channel, or a ``locker_id`` other than the topic's; and every error of
    :func:`decode_device_message`.
    """
    locker_id, channel = layout.parse(topic)
    if channel not in UPLINK:
        raise RemoteProtocolError(
            f"{channel.value} is not a channel lockers publish on", code="topic_mismatch"
        )
    message = decode_device_message(payload)
    if CHANNEL_OF_TYPE[message.TYPE] is not channel:
        raise RemoteProtocolError(
            f"a {message.TYPE} message does not belong on the {channel.value} channel",
            code="topic_mismatch",
            path="type",
        )
    if message.locker_id != locker_id:
        raise RemoteProtocolError(
            f"locker_id {message.locker_id!r} differs from the topic's {locker_id!r}",
            code="topic_mismatch",
            path="locker_id",
        )
    return message


def message_to_object(message: Message) -> dict[str, Any]:
    """Return the JSON-ready dict of ``message``, with ``v`` and ``type`` first."""
    body = to_wire(message)
    if body.get("sig") == "":
        del body["sig"]
    return {"v": PROTOCOL_VERSION, "type": message.TYPE, **body}


def encode(message: Message) -> bytes:
    """Return the compact UTF-8 JSON of ``message``.

    Raises :class:`LocalProtocolError` if the result would exceed :data:`MAX_PAYLOAD_BYTES`.
    """
    return encode_object(message_to_object(message))


def encode_object(obj: dict[str, Any]) -> bytes:
    """Return the compact UTF-8 JSON of a wire object (as :func:`message_to_object` gives).

    Raises :class:`LocalProtocolError` if the result would exceed :data:`MAX_PAYLOAD_BYTES`.
    """
    payload = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise LocalProtocolError(
            f"{obj.get('type')} of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}",
            code="too_large",
        )
    return payload
