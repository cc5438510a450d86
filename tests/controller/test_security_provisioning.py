"""Provisioning tokens: issued by technicians, stored only as a keyed hash, redeemed once (also
under concurrent redemption), refused when reused, expired or unknown; a decommissioned locker
gets no token and its messages are dropped."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import select

from controller.clock import ManualClock
from controller.db.models import AuditEntry, ProvisioningToken
from controller.runtime import Runtime
from controller.services.provisioning import InvalidProvisioningToken
from controller.services.views import Credentials
from controller.testing.seed import Seeded
from protocol.messages import Tamper
from tests.controller.support import LAYOUT, ScriptedLocker, auth


async def issue(api: httpx.AsyncClient, seeded: Seeded, locker_id: str) -> str:
    response = await api.post(
        f"/api/v1/lockers/{locker_id}/provisioning-tokens", headers=auth(seeded, "technician")
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


async def test_a_token_is_traded_once_for_the_lockers_credentials(
    api: httpx.AsyncClient, runtime: Runtime, seeded: Seeded
) -> None:
    locker_id = sorted(seeded.lockers)[0]
    token = await issue(api, seeded, locker_id)
    async with runtime.db.reader() as session:
        stored = list(await session.scalars(select(ProvisioningToken.token_hash)))
    assert stored == [runtime.ctx.keys.token_hash(token)] and token not in stored

    redeemed = await api.post("/api/v1/provisioning/redeem", json={"token": token})
    assert redeemed.status_code == 200
    expected = seeded.lockers[locker_id]
    assert redeemed.json()["mqtt_password"] == expected.mqtt_password
    assert redeemed.json()["command_key_hex"] == expected.command_key_hex

    again = await api.post("/api/v1/provisioning/redeem", json={"token": token})
    assert again.status_code == 403
    assert again.json()["error"]["code"] == "invalid_provisioning_token"
    async with runtime.db.reader() as session:
        actions = list(await session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))
    assert actions[-3:] == ["provisioning_token_issued", "provisioned", "provisioning_refused"]


@pytest.mark.parametrize("role", ["courier", "agent", "operator"])
async def test_only_technicians_and_admins_issue_tokens(
    api: httpx.AsyncClient, seeded: Seeded, role: str
) -> None:
    response = await api.post(
        f"/api/v1/lockers/{sorted(seeded.lockers)[0]}/provisioning-tokens",
        headers=auth(seeded, role),
    )
    assert response.status_code == 403


async def test_expired_and_unknown_tokens_are_refused(
    api: httpx.AsyncClient, runtime: Runtime, seeded: Seeded, clock: ManualClock
) -> None:
    token = await issue(api, seeded, sorted(seeded.lockers)[0])
    clock.advance(minutes=31)
    for attempt in (token, "lfp_" + "x" * 43, "not-a-token"):
        with pytest.raises(InvalidProvisioningToken):
            await runtime.services.provisioning.redeem(attempt)


async def test_concurrent_redemptions_give_the_credentials_out_once(
    api: httpx.AsyncClient, runtime: Runtime, seeded: Seeded
) -> None:
    token = await issue(api, seeded, sorted(seeded.lockers)[0])
    results = await asyncio.gather(
        *(runtime.services.provisioning.redeem(token) for _ in range(6)), return_exceptions=True
    )
    assert sum(isinstance(r, Credentials) for r in results) == 1
    assert sum(isinstance(r, InvalidProvisioningToken) for r in results) == 5


async def test_a_decommissioned_locker_never_works_again(
    api: httpx.AsyncClient, runtime: Runtime, seeded: Seeded
) -> None:
    locker_id = sorted(seeded.lockers)[0]
    scripted = ScriptedLocker(runtime, locker_id)
    await scripted.come_online(LAYOUT)
    pending = await issue(api, seeded, locker_id)
    body = {"reason": "cabinet replaced"}
    url = f"/api/v1/lockers/{locker_id}/decommission"
    assert (await api.post(url, json=body, headers=auth(seeded, "technician"))).status_code == 403
    assert (await api.post(url, json=body, headers=auth(seeded, "admin"))).status_code == 204
    assert (await api.post(url, json=body, headers=auth(seeded, "admin"))).status_code == 409
    refused = await api.post("/api/v1/provisioning/redeem", json={"token": pending})
    assert refused.status_code == 403, "its unused token died with it"
    again = await api.post(
        f"/api/v1/lockers/{locker_id}/provisioning-tokens", headers=auth(seeded, "technician")
    )
    assert again.status_code == 409
    report = await scripted.send(scripted.event(Tamper("")))
    assert [r.code for r in report.rejected] == ["unknown_locker"] and report.stored == 0
