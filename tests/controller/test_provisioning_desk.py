"""The controller's answers to provisioning requests (controller/mqtt/provisioning.py), without
a broker: what gets an answer, what gets none, and one answer when two replicas receive the
same request at once (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from controller.db.models import AuditEntry
from controller.mqtt.provisioning import ProvisioningDesk
from controller.runtime import Runtime
from controller.services.context import Actor, Role
from controller.testing.seed import Seeded
from protocol.codec import encode
from protocol.messages import LockerCredentials, ProvisionRefusal, ProvisionRequest
from protocol.provisioning import open_response

REQUEST_ID = "0123456789abcdef" * 2


def desk(runtime: Runtime) -> ProvisioningDesk:
    assert runtime.bridge is not None
    return ProvisioningDesk(runtime.ctx, runtime.services.provisioning, runtime.bridge.address)


async def token_for(runtime: Runtime, seeded: Seeded, locker_id: str) -> str:
    technician = Actor(seeded.user_ids["technician"], Role.TECHNICIAN)
    return (await runtime.services.provisioning.issue_token(technician, locker_id)).token


def request(
    runtime: Runtime, locker_id: str, token: str, request_id: str = REQUEST_ID
) -> tuple[str, bytes]:
    topic = runtime.ctx.topics.provision_request(locker_id)
    return topic, encode(ProvisionRequest(locker_id, request_id, token, 1))


async def test_two_replicas_receiving_one_request_answer_it_once(
    runtime: Runtime, seeded: Seeded
) -> None:
    """Afterwards: exactly one sealed answer exists, the other replica stays silent (a refusal
    could overtake the answer at the locker), and nothing is audited as refused."""
    locker_id = sorted(seeded.lockers)[0]
    topic, payload = request(runtime, locker_id, await token_for(runtime, seeded, locker_id))
    replies = await asyncio.gather(desk(runtime).answer(topic, payload),
                                   desk(runtime).answer(topic, payload))  # fmt: skip
    answered = [r for r in replies if r is not None]
    assert len(answered) == 1
    response_topic, response = answered[0]
    assert response_topic == runtime.ctx.topics.provision_response(locker_id)
    assert response.sealed is not None
    async with runtime.db.reader() as session:
        actions = list(await session.scalars(select(AuditEntry.action)))
    assert "provisioning_refused" not in actions and actions.count("provisioned") == 1


async def test_a_new_request_with_a_used_token_is_refused_and_a_repeat_gets_nothing(
    runtime: Runtime, seeded: Seeded
) -> None:
    """Afterwards: the repeat of the answered request got no answer; a new request with the
    same token got an authentic refusal with nothing sealed in it."""
    locker_id = sorted(seeded.lockers)[0]
    token = await token_for(runtime, seeded, locker_id)
    first = await desk(runtime).answer(*request(runtime, locker_id, token))
    assert first is not None
    opened = open_response(first[1], token=token, locker_id=locker_id, request_id=REQUEST_ID)
    assert isinstance(opened, LockerCredentials)
    assert opened.command_key == seeded.lockers[locker_id].command_key_hex

    assert await desk(runtime).answer(*request(runtime, locker_id, token)) is None
    other = "f" * 32
    refused = await desk(runtime).answer(*request(runtime, locker_id, token, other))
    assert refused is not None and refused[1].sealed is None
    verdict = open_response(refused[1], token=token, locker_id=locker_id, request_id=other)
    assert verdict is ProvisionRefusal.INVALID_TOKEN


async def test_unreadable_or_misaddressed_requests_get_no_answer(
    runtime: Runtime, seeded: Seeded
) -> None:
    """A request that cannot be read, or names another locker than its topic, is not answered
    and spends no token; a token presented for another locker is refused (audited under the
    locker that presented it, naming the token's) and spends nothing either; afterwards the
    token still works for its own locker."""
    first, second = sorted(seeded.lockers)
    token = await token_for(runtime, seeded, first)
    _, payload = request(runtime, first, token)
    misaddressed = runtime.ctx.topics.provision_request(second)
    assert await desk(runtime).answer(misaddressed, payload) is None
    assert await desk(runtime).answer(runtime.ctx.topics.provision_request(first), b"{]") is None
    assert await desk(runtime).answer("elsewhere/request", payload) is None
    stolen = await desk(runtime).answer(*request(runtime, second, token))
    assert stolen is not None and stolen[1].reason is ProvisionRefusal.INVALID_TOKEN
    works = await desk(runtime).answer(*request(runtime, first, token))
    assert works is not None and works[1].sealed is not None
    async with runtime.db.reader() as session:
        query = select(AuditEntry).where(AuditEntry.action == "provisioning_refused")
        (refusal,) = (await session.scalars(query)).all()
    assert (refusal.locker_id, refusal.detail) == (
        second,
        {"reason": "other_locker", "via": "mqtt", "token_locker": first},
    )
