"""The MQTT topic layout, with the QoS and retain flag of every channel.

::

    {root}/locker/{locker_id}/presence    locker → controller   QoS 1  retained (last will: offline)
    {root}/locker/{locker_id}/birth       locker → controller   QoS 1
    {root}/locker/{locker_id}/event       locker → controller   QoS 1
    {root}/locker/{locker_id}/result      locker → controller   QoS 1
    {root}/locker/{locker_id}/telemetry   locker → controller   QoS 0
    {root}/locker/{locker_id}/cmd         controller → locker   QoS 1
    {root}/locker/{locker_id}/ack         controller → locker   QoS 1
    {root}/controller/{instance}/presence controller → all      QoS 1  retained (last will: offline)
    {root}/provision/{locker_id}/request  locker → controller   QoS 1  (provisioning identity)
    {root}/provision/{locker_id}/response controller → locker   QoS 1  (sealed, see auth)

``root`` defaults to ``lf/v1``; a deployment (or a test) may choose another so that several
fleets share one broker. A locker id never contains ``/``, ``+`` or ``#`` (see ``LockerId``).
Controllers may subscribe through a shared subscription (``$share/{group}/...``) where the
broker offers one; nothing in the protocol depends on it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from protocol.errors import RemoteProtocolError
from protocol.fields import Pattern

DEFAULT_ROOT = "lf/v1"
_LOCKER_ID = Pattern(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_ROOT_SEGMENT = Pattern(r"[A-Za-z0-9_.-]{1,64}")
_INSTANCE = Pattern(r"[A-Za-z0-9_.-]{1,64}")


class Channel(enum.StrEnum):
    PRESENCE = "presence"
    BIRTH = "birth"
    EVENT = "event"
    RESULT = "result"
    TELEMETRY = "telemetry"
    COMMAND = "cmd"
    ACK = "ack"


@dataclass(frozen=True, slots=True)
class Delivery:
    """How a channel is published: MQTT QoS and the retain flag."""

    qos: int
    retain: bool


DELIVERY: dict[Channel, Delivery] = {
    Channel.PRESENCE: Delivery(1, True),
    Channel.BIRTH: Delivery(1, False),
    Channel.EVENT: Delivery(1, False),
    Channel.RESULT: Delivery(1, False),
    Channel.TELEMETRY: Delivery(0, False),
    Channel.COMMAND: Delivery(1, False),
    Channel.ACK: Delivery(1, False),
}

CHANNEL_OF_TYPE: dict[str, Channel] = {
    "presence": Channel.PRESENCE,
    "birth": Channel.BIRTH,
    "event": Channel.EVENT,
    "result": Channel.RESULT,
    "telemetry": Channel.TELEMETRY,
    "command": Channel.COMMAND,
    "ack": Channel.ACK,
}
"""The channel each message type travels on (``controller_presence`` has its own topic)."""

PROVISIONING = Delivery(1, False)
"""How provisioning requests and responses are published (outside the per-locker channels)."""

UPLINK = (Channel.PRESENCE, Channel.BIRTH, Channel.EVENT, Channel.RESULT, Channel.TELEMETRY)
DOWNLINK = (Channel.COMMAND, Channel.ACK)


@dataclass(frozen=True, slots=True)
class TopicLayout:
    """Builds and parses topics under one ``root``."""

    root: str = DEFAULT_ROOT

    def __post_init__(self) -> None:
        segments = self.root.split("/")
        if not all(_ROOT_SEGMENT.compiled.fullmatch(s) for s in segments):
            raise ValueError(f"topic root {self.root!r} must be '/'-separated [A-Za-z0-9_.-] words")

    def locker(self, locker_id: str, channel: Channel) -> str:
        """Return the topic of ``channel`` for ``locker_id``."""
        if not _LOCKER_ID.compiled.fullmatch(locker_id):
            raise ValueError(f"invalid locker id {locker_id!r}")
        return f"{self.root}/locker/{locker_id}/{channel.value}"

    def all_lockers(self, channel: Channel) -> str:
        """Return the wildcard filter of ``channel`` for every locker."""
        return f"{self.root}/locker/+/{channel.value}"

    def controller_presence(self, instance: str) -> str:
        """Return the presence topic of controller ``instance``."""
        if not _INSTANCE.compiled.fullmatch(instance):
            raise ValueError(f"invalid controller instance {instance!r}")
        return f"{self.root}/controller/{instance}/presence"

    def all_controllers(self) -> str:
        """Return the wildcard filter of every controller instance's presence."""
        return f"{self.root}/controller/+/presence"

    def provision_request(self, locker_id: str) -> str:
        """Return the topic an unprovisioned ``locker_id`` publishes its request on."""
        if not _LOCKER_ID.compiled.fullmatch(locker_id):
            raise ValueError(f"invalid locker id {locker_id!r}")
        return f"{self.root}/provision/{locker_id}/request"

    def provision_response(self, locker_id: str) -> str:
        """Return the topic the controller answers ``locker_id``'s provisioning request on."""
        if not _LOCKER_ID.compiled.fullmatch(locker_id):
            raise ValueError(f"invalid locker id {locker_id!r}")
        return f"{self.root}/provision/{locker_id}/response"

    def all_provision_requests(self) -> str:
        """Return the wildcard filter of every locker's provisioning requests."""
        return f"{self.root}/provision/+/request"

    def all_provision_responses(self) -> str:
        """Return the wildcard filter of every provisioning response (what the provisioning
        identity may read: responses are sealed, so reading another's is harmless)."""
        return f"{self.root}/provision/+/response"

    def parse_provision_request(self, topic: str) -> str:
        """Return the locker id of a provisioning request topic.

        Raises :class:`RemoteProtocolError` (``invalid_topic``) for anything else.
        """
        prefix, suffix = f"{self.root}/provision/", "/request"
        locker_id = topic[len(prefix) : -len(suffix)]
        if (
            not topic.startswith(prefix)
            or not topic.endswith(suffix)
            or not _LOCKER_ID.compiled.fullmatch(locker_id)
        ):
            raise RemoteProtocolError(
                f"topic {topic!r:.80} is not a provisioning request topic", code="invalid_topic"
            )
        return locker_id

    def parse(self, topic: str) -> tuple[str, Channel]:
        """Return ``(locker_id, channel)`` of a locker topic.

        Raises :class:`RemoteProtocolError` (``invalid_topic``) for anything else.
        """
        prefix = f"{self.root}/locker/"
        if not topic.startswith(prefix):
            raise RemoteProtocolError(
                f"topic {topic!r:.80} is not under {prefix}", code="invalid_topic"
            )
        parts = topic[len(prefix) :].split("/")
        if len(parts) != 2 or not _LOCKER_ID.compiled.fullmatch(parts[0]):
            raise RemoteProtocolError(
                f"topic {topic!r:.80} is not a locker topic", code="invalid_topic"
            )
        try:
            return parts[0], Channel(parts[1])
        except ValueError:
            raise RemoteProtocolError(
                f"unknown channel {parts[1]!r:.40}", code="invalid_topic"
            ) from None

    def controller_subscriptions(
        self, share_group: str | None = None, *, stream_qos: int | None = None
    ) -> list[tuple[str, int]]:
        """Return the filters (with QoS) a controller subscribes to.

        With ``share_group`` the event streams go through ``$share/{group}/`` so replicas split
        them; presence stays a plain subscription so that every replica sees retained state.
        ``stream_qos`` caps the QoS at which the broker delivers the sequenced channels (birth,
        event, result) to the controller; by default they arrive at the QoS they are published
        at. The broker-to-controller hop is the subscriber's choice: acknowledgement is end to
        end (§5.4), so a controller may take them at QoS 0.
        """
        shared = f"$share/{share_group}/" if share_group else ""
        subs = [(self.all_lockers(Channel.PRESENCE), 1)]
        for channel in (Channel.BIRTH, Channel.EVENT, Channel.RESULT, Channel.TELEMETRY):
            qos = DELIVERY[channel].qos
            if stream_qos is not None:
                qos = min(qos, stream_qos)
            subs.append((shared + self.all_lockers(channel), qos))
        return subs

    def locker_subscriptions(self, locker_id: str) -> list[tuple[str, int]]:
        """Return the filters (with QoS) a locker subscribes to: its commands and acks."""
        return [(self.locker(locker_id, c), DELIVERY[c].qos) for c in DOWNLINK]
