"""The machine-readable contract: an AsyncAPI 3.0 document generated from :mod:`protocol`.

Nothing here is written by hand twice. Channels and their QoS and retain flags come from
:mod:`protocol.topics`, payload schemas from :func:`protocol.fields.json_schema` applied to the
message dataclasses, with the envelope's ``v`` (always 1) and ``type`` added as constants. The
document is written from the **locker's point of view**: ``send`` operations are what a locker
publishes (presence, birth, event, result, telemetry), ``receive`` operations what it subscribes
to (commands, acknowledgements and, optionally, controller presence).

Payload schemas use only keywords that mean the same in JSON Schema draft-07 (AsyncAPI's
default schema format) and draft 2020-12, in which the tests validate against them. They cannot
say everything the codec checks (cross-field rules such as ``page <= pages``, the 16 KiB limit,
that ``1.0`` is not an integer); ``docs/protocol.md`` does.

``python -m protocol.asyncapi > docs/asyncapi.json`` regenerates the committed file; a test
fails when the two differ.
"""

from __future__ import annotations

import json
from typing import Any

from protocol.fields import json_schema
from protocol.messages import (
    CONTROLLER_MESSAGES,
    DEVICE_MESSAGES,
    PROTOCOL_VERSION,
    PROVISIONING_MESSAGES,
    ControllerPresence,
    ProvisionRequest,
    ProvisionResponse,
)
from protocol.topics import CHANNEL_OF_TYPE, DELIVERY, PROVISIONING, UPLINK, Channel, TopicLayout

DEFAULT_ROOT = TopicLayout().root
ASYNCAPI_VERSION = "3.0.0"
MQTT_BINDING = "0.2.0"
KEEPALIVE_S = 60
"""The MQTT keepalive a locker should use (seconds)."""

ALL_TYPES: dict[str, type[Any]] = {
    **DEVICE_MESSAGES,
    **CONTROLLER_MESSAGES,
    **PROVISIONING_MESSAGES,
}
CONTROLLER_PRESENCE = "controllerPresence"
"""Channel id of the controllers' presence topic, which is not a per-locker channel."""
PROVISION_REQUEST = "provisionRequest"
PROVISION_RESPONSE = "provisionResponse"
"""Channel ids of the provisioning topics (an unprovisioned locker, provisioning identity)."""

_LOCKER_ID = (
    "The locker's id, as in the payload's `locker_id` (1-64 of `A-Z a-z 0-9 _ -`, first a "
    "letter or digit). The controller rejects a message whose `locker_id` differs from it."
)


def message_schema(message_type: str) -> dict[str, Any]:
    """Return the JSON Schema of one message type's payload, envelope constants included.

    Raises :class:`KeyError` for a type the protocol does not define.
    """
    schema = json_schema(ALL_TYPES[message_type])
    properties = {
        "v": {"type": "integer", "const": PROTOCOL_VERSION, "description": "Protocol version."},
        "type": {"type": "string", "const": message_type, "description": "Message type."},
        **schema["properties"],
    }
    return {
        **schema,
        "properties": properties,
        "required": ["v", "type", *schema.get("required", [])],
    }


def _summary(cls: type[Any]) -> str:
    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split())


def _binding(qos: int, retain: bool) -> dict[str, Any]:
    return {"mqtt": {"qos": qos, "retain": retain, "bindingVersion": MQTT_BINDING}}


def _channels(layout: TopicLayout) -> dict[str, Any]:
    channels: dict[str, Any] = {}
    for channel in Channel:
        (message_type,) = (t for t, c in CHANNEL_OF_TYPE.items() if c is channel)
        delivery = DELIVERY[channel]
        direction = "locker → controller" if channel in UPLINK else "controller → locker"
        channels[channel.value] = {
            "address": layout.all_lockers(channel).replace("+", "{locker_id}"),
            "title": f"{channel.value} ({direction})",
            "description": (
                f"{direction}; QoS {delivery.qos}, "
                f"{'retained' if delivery.retain else 'not retained'}. "
                f"Carries `{message_type}` messages."
            ),
            "parameters": {"locker_id": {"description": _LOCKER_ID}},
            "messages": {message_type: {"$ref": f"#/components/messages/{message_type}"}},
        }
    channels[CONTROLLER_PRESENCE] = {
        "address": layout.all_controllers().replace("+", "{instance}"),
        "title": "controller presence (controller → everyone)",
        "description": (
            "Retained, QoS 1; the offline form is each controller instance's last will. "
            "Lockers MAY subscribe; nothing in the protocol depends on it."
        ),
        "parameters": {"instance": {"description": "Name of one controller instance (replica)."}},
        "messages": {
            ControllerPresence.TYPE: {"$ref": f"#/components/messages/{ControllerPresence.TYPE}"}
        },
    }
    for channel_id, cls, address, direction in (
        (PROVISION_REQUEST, ProvisionRequest, layout.provision_request("X"), "locker → controller"),
        (
            PROVISION_RESPONSE,
            ProvisionResponse,
            layout.provision_response("X"),
            "controller → locker",
        ),
    ):
        channels[channel_id] = {
            "address": address.replace("/X/", "/{locker_id}/"),
            "title": f"{cls.TYPE} ({direction})",
            "description": (
                f"{direction}; QoS {PROVISIONING.qos}, not retained. Used only by an "
                f"unprovisioned locker connected with the provisioning identity. Carries "
                f"`{cls.TYPE}` messages."
            ),
            "parameters": {"locker_id": {"description": _LOCKER_ID}},
            "messages": {cls.TYPE: {"$ref": f"#/components/messages/{cls.TYPE}"}},
        }
    return channels


def _operations() -> dict[str, Any]:
    operations: dict[str, Any] = {}
    for channel in Channel:
        (message_type,) = (t for t, c in CHANNEL_OF_TYPE.items() if c is channel)
        delivery = DELIVERY[channel]
        send = channel in UPLINK
        name = ("publish" if send else "receive") + message_type.title()
        operation: dict[str, Any] = {
            "action": "send" if send else "receive",
            "channel": {"$ref": f"#/channels/{channel.value}"},
            "summary": _summary(ALL_TYPES[message_type]),
            "messages": [{"$ref": f"#/channels/{channel.value}/messages/{message_type}"}],
            "bindings": _binding(delivery.qos, delivery.retain),
        }
        if channel is Channel.COMMAND:
            operation["reply"] = {
                "channel": {"$ref": f"#/channels/{Channel.RESULT.value}"},
                "messages": [{"$ref": f"#/channels/{Channel.RESULT.value}/messages/result"}],
            }
        operations[name] = operation
    operations["receiveControllerPresence"] = {
        "action": "receive",
        "channel": {"$ref": f"#/channels/{CONTROLLER_PRESENCE}"},
        "summary": _summary(ControllerPresence),
        "messages": [
            {"$ref": f"#/channels/{CONTROLLER_PRESENCE}/messages/{ControllerPresence.TYPE}"}
        ],
        "bindings": _binding(1, True),
    }
    operations["sendProvisionRequest"] = {
        "action": "send",
        "channel": {"$ref": f"#/channels/{PROVISION_REQUEST}"},
        "summary": _summary(ProvisionRequest),
        "messages": [{"$ref": f"#/channels/{PROVISION_REQUEST}/messages/{ProvisionRequest.TYPE}"}],
        "bindings": _binding(PROVISIONING.qos, PROVISIONING.retain),
        "reply": {
            "channel": {"$ref": f"#/channels/{PROVISION_RESPONSE}"},
            "messages": [
                {"$ref": f"#/channels/{PROVISION_RESPONSE}/messages/{ProvisionResponse.TYPE}"}
            ],
        },
    }
    operations["receiveProvisionResponse"] = {
        "action": "receive",
        "channel": {"$ref": f"#/channels/{PROVISION_RESPONSE}"},
        "summary": _summary(ProvisionResponse),
        "messages": [
            {"$ref": f"#/channels/{PROVISION_RESPONSE}/messages/{ProvisionResponse.TYPE}"}
        ],
        "bindings": _binding(PROVISIONING.qos, PROVISIONING.retain),
    }
    return operations


def _servers(layout: TopicLayout) -> dict[str, Any]:
    will = layout.all_lockers(Channel.PRESENCE).replace("+", "{locker_id}")
    binding = {
        "mqtt": {
            "cleanSession": False,
            "keepAlive": KEEPALIVE_S,
            "lastWill": {
                "topic": will,
                "qos": 1,
                "retain": True,
                "message": "The locker's presence message with state offline.",
            },
            "bindingVersion": MQTT_BINDING,
        }
    }
    common = {
        "protocolVersion": "3.1.1",
        "variables": {"host": {"description": "Broker host name.", "default": "localhost"}},
        "security": [{"$ref": "#/components/securitySchemes/lockerCredentials"}],
        "bindings": binding,
    }
    return {
        "broker": {
            "host": "{host}:1883",
            "protocol": "mqtt",
            "description": "MQTT 3.1.1 (MQTT 5 optional). Client id = locker id.",
            **common,
        },
        "brokerTls": {
            "host": "{host}:8883",
            "protocol": "secure-mqtt",
            "description": "The same over TLS; use it on any link that is not private.",
            **common,
        },
    }


def asyncapi_document(root: str = DEFAULT_ROOT) -> dict[str, Any]:
    """Return the AsyncAPI 3.0 document of the MQTT API with topics under ``root``.

    Raises :class:`ValueError` for an invalid topic root.
    """
    layout = TopicLayout(root)
    messages = {
        message_type: {
            "name": message_type,
            "title": cls.__name__,
            "summary": _summary(cls),
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{message_type}"},
            "bindings": {"mqtt": {"payloadFormatIndicator": 1, "bindingVersion": MQTT_BINDING}},
        }
        for message_type, cls in ALL_TYPES.items()
    }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "lockerfleet locker protocol",
            "version": f"{PROTOCOL_VERSION}.0.0",
            "description": (
                "The MQTT contract between smart parcel lockers and the lockerfleet controller, "
                "written from the locker's point of view: `send` operations are what a locker "
                "publishes, `receive` operations what it subscribes to. The normative text, "
                "with sequencing, acknowledgement, authentication and state-machine rules this "
                "document cannot express, is docs/protocol.md. Payloads are UTF-8 JSON of at "
                "most 16 KiB with integers only (no fractions). Generated by "
                "`python -m protocol.asyncapi`."
            ),
            "license": {
                "name": "Apache-2.0",
                "url": "https://www.apache.org/licenses/LICENSE-2.0",
            },
        },
        "defaultContentType": "application/json",
        "servers": _servers(layout),
        "channels": _channels(layout),
        "operations": _operations(),
        "components": {
            "schemas": {t: message_schema(t) for t in ALL_TYPES},
            "messages": messages,
            "securitySchemes": {
                "lockerCredentials": {
                    "type": "userPassword",
                    "description": (
                        "MQTT user name = locker id; password = the locker's own MQTT password "
                        "(not its command key or code key). An unprovisioned locker uses the "
                        "fleet's provisioning identity instead, which may only publish "
                        "provisioning requests and read provisioning responses."
                    ),
                }
            },
        },
    }


def main() -> None:
    print(json.dumps(asyncapi_document(), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
