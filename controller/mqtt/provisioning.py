"""Provisioning over MQTT: answer unprovisioned lockers on the shared provisioning identity.

An unprovisioned locker connects as ``_provisioning`` (see :mod:`controller.services.
broker_config`), which may only publish ``{root}/provision/{id}/request`` and read
``{root}/provision/{id}/response`` (docs/protocol.md §3.5). :class:`ProvisioningDesk` has its
own aiomqtt connection per replica, subscribed to every request (through the shared
subscription of the replicas when there is one), and answers each in turn:

* a request it cannot parse, or whose ``locker_id`` is not the topic's, gets no answer (without
  a parsed token there is no key to authenticate an answer with) and is logged;
* otherwise the token is redeemed (:meth:`~controller.services.provisioning.ProvisioningService.
  redeem`, atomic and single use, every refusal audited) and the answer is published: the
  credentials sealed with the token's keys (:func:`protocol.provisioning.seal_credentials`), or
  a refusal (``invalid_token``; ``unavailable`` while the database is down);
* the very request that used a token, delivered again (QoS 1 redelivery, or a second replica
  without shared subscriptions), gets no answer: its ``ok`` went out already.

Requests are rare (a technician at a locker), so they are answered one at a time. Like the
bridge, the connection is kept up forever with jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import aiomqtt

from controller.clock import to_ms
from controller.db.outage import DATABASE_DOWN
from controller.mqtt.nodelay import client_tcp_nodelay
from controller.mqtt.reading import paho_client_of
from controller.mqtt.reconnect import stay_connected
from controller.services.context import Context
from controller.services.provisioning import (
    InvalidProvisioningToken,
    ProvisioningService,
    RepeatedProvisioningRequest,
)
from controller.services.views import Credentials
from protocol.codec import decode, encode
from protocol.errors import RemoteProtocolError
from protocol.messages import (
    LockerCredentials,
    ProvisionRefusal,
    ProvisionRequest,
    ProvisionResponse,
)
from protocol.provisioning import NONCE_BYTES, refusal, seal_credentials
from protocol.topics import PROVISIONING
from protocol.urls import BrokerAddress

log = logging.getLogger("lockerfleet.provisioning")

REQUESTS = {ProvisionRequest.TYPE: ProvisionRequest}


def locker_credentials(credentials: Credentials) -> LockerCredentials:
    """Return the protocol's form of the credentials the service hands out."""
    return LockerCredentials(
        mqtt_username=credentials.mqtt_username,
        mqtt_password=credentials.mqtt_password,
        command_key=credentials.command_key_hex,
        code_key=credentials.code_key_hex,
        topic_root=credentials.topic_root,
    )


class ProvisioningDesk:
    """Answers provisioning requests arriving over MQTT (one per controller replica)."""

    def __init__(self, ctx: Context, service: ProvisioningService, address: BrokerAddress) -> None:
        self.ctx = ctx
        self.service = service
        self.address = address
        self.answered = 0
        self.ignored = 0
        self.subscribed = asyncio.Event()
        """Set while subscribed to the requests (for readiness checks and tests)."""

    async def answer(self, topic: str, payload: bytes) -> tuple[str, ProvisionResponse] | None:
        """Return the topic and the response to publish for one request, or ``None`` when it
        gets no answer (unreadable, another locker's topic, or a repeat of an answered one)."""
        try:
            claimed = self.ctx.topics.parse_provision_request(topic)
            request = decode(payload, REQUESTS)
        except RemoteProtocolError as exc:
            log.warning("ignored provisioning request on %s: %s (%s)", topic, exc, exc.code)
            return None
        if request.locker_id != claimed:
            log.warning("ignored provisioning request for %s on %s", request.locker_id, topic)
            return None
        nonce, ts = secrets.token_bytes(NONCE_BYTES), to_ms(self.ctx.clock.now())
        token, request_id = request.token, request.request_id

        def refuse(reason: ProvisionRefusal) -> ProvisionResponse:
            return refusal(
                reason, token=token, locker_id=claimed, request_id=request_id, nonce=nonce, ts=ts
            )

        try:
            issued = await self.service.redeem(
                token, locker_id=claimed, request_id=request_id, via="mqtt"
            )
        except RepeatedProvisioningRequest:
            log.info("request %s of %s was answered already", request_id, claimed)
            return None
        except InvalidProvisioningToken:
            response = refuse(ProvisionRefusal.INVALID_TOKEN)
        except DATABASE_DOWN as exc:
            log.warning("provisioning %s: database unavailable (%s)", claimed, exc)
            response = refuse(ProvisionRefusal.UNAVAILABLE)
        else:
            response = seal_credentials(
                locker_credentials(issued), token=token, locker_id=claimed,
                request_id=request_id, nonce=nonce, ts=ts,
            )  # fmt: skip
            log.info("provisioned %s over MQTT", claimed)
        return self.ctx.topics.provision_response(claimed), response

    async def run(self) -> None:
        """Stay connected until cancelled, reconnecting with jittered backoff."""
        await stay_connected(
            self._session, f"provisioning: broker {self.address.url()}", self.subscribed.clear
        )

    async def _session(self) -> None:
        settings = self.ctx.settings
        shared = f"$share/{settings.share_group}/" if settings.share_group else ""
        async with aiomqtt.Client(
            self.address.host,
            self.address.port,
            username=self.address.username,
            password=self.address.password,
            identifier=f"lockerfleet-{settings.instance_id}-provisioning",
            clean_session=True,
            keepalive=30,
        ) as client:
            client_tcp_nodelay(paho_client_of(client))
            await client.subscribe(
                shared + self.ctx.topics.all_provision_requests(), qos=PROVISIONING.qos
            )
            self.subscribed.set()
            async for message in client.messages:
                payload = message.payload
                if not isinstance(payload, bytes | bytearray):
                    payload = str(payload).encode() if payload is not None else b""
                try:
                    reply = await self.answer(message.topic.value, bytes(payload))
                except Exception:  # a bug must not stop provisioning for every later locker
                    log.exception("provisioning request on %s failed", message.topic.value)
                    reply = None
                if reply is None:
                    self.ignored += 1
                    continue
                topic, response = reply
                await client.publish(topic, encode(response), qos=PROVISIONING.qos)
                self.answered += 1
