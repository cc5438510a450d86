"""Credential rotation and revocation on the controller side (real databases): a new broker
password and command key, the same code key (codes issued before still hash the same), old
tokens withdrawn, every change audited, decommissioning final, roles enforced."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from controller.db.models import AuditEntry, Locker
from controller.domain.errors import Conflict, NotAllowed
from controller.runtime import Runtime
from controller.testing.seed import Seeded
from protocol.codes import code_hash
from tests.controller.support import actor, auth


async def test_rotation_gives_new_broker_and_command_keys_but_keeps_the_code_key(
    api: httpx.AsyncClient, runtime: Runtime, seeded: Seeded
) -> None:
    locker_id = sorted(seeded.lockers)[0]
    before = seeded.lockers[locker_id]
    stale = await api.post(
        f"/api/v1/lockers/{locker_id}/provisioning-tokens", headers=auth(seeded, "technician")
    )
    rotated = await api.post(
        f"/api/v1/lockers/{locker_id}/credentials/rotate", headers=auth(seeded, "technician"),
        json={"reason": "board serviced", "ttl_minutes": 60},
    )  # fmt: skip
    assert rotated.status_code == 201, rotated.text
    body = rotated.json()
    assert (body["action"], body["key_generation"]) == ("rotated", 2)
    assert "broker-config" in body["next_step"]

    redeemed = await api.post(
        "/api/v1/provisioning/redeem", json={"token": body["provisioning_token"]["token"]}
    )
    assert redeemed.status_code == 200
    after = redeemed.json()
    assert after["mqtt_password"] == runtime.ctx.keys.mqtt_password(locker_id, 2)
    assert after["mqtt_password"] != before.mqtt_password
    assert after["command_key_hex"] != before.command_key_hex
    # What must still hold: the code key is the one the locker's cached codes were hashed with.
    assert after["code_key_hex"] == before.code_key_hex
    # A token issued before the rotation died with the old generation.
    old = await api.post("/api/v1/provisioning/redeem", json={"token": stale.json()["token"]})
    assert old.status_code == 403
    async with runtime.db.reader() as session:
        entry = await session.scalar(
            select(AuditEntry).where(AuditEntry.action == "credentials_rotated")
        )
    assert entry is not None and entry.detail["reason"] == "board serviced"
    assert (entry.detail["old_generation"], entry.detail["key_generation"]) == (1, 2)
    assert entry.detail["tokens_withdrawn"] == 1


async def test_codes_issued_before_a_rotation_keep_their_hash(
    runtime: Runtime, seeded: Seeded
) -> None:
    """Issued codes are stored as hashes under the code key: after a rotation the controller
    still computes the same hash for the same code, so it still recognises them."""
    locker_id = sorted(seeded.lockers)[0]
    admin = await actor(runtime, seeded, "admin")
    async with runtime.db.reader() as session:
        locker = await session.get(Locker, locker_id)
        assert locker is not None
        generation_before = locker.code_key_generation
    await runtime.services.rotation.rotate(admin, locker_id, "yearly rotation")
    await runtime.services.rotation.revoke(admin, locker_id, "board stolen")
    async with runtime.db.reader() as session:
        locker = await session.get(Locker, locker_id)
        assert locker is not None
        assert (locker.key_generation, locker.code_key_generation) == (3, generation_before)
    in_the_locker = bytes.fromhex(seeded.lockers[locker_id].code_key_hex)
    here = runtime.ctx.keys.code_key(locker_id, generation_before)
    assert code_hash(here, locker_id, "123456") == code_hash(in_the_locker, locker_id, "123456")


async def test_revocation_issues_nothing_and_only_admins_revoke(
    api: httpx.AsyncClient, runtime: Runtime, seeded: Seeded
) -> None:
    locker_id = sorted(seeded.lockers)[0]
    url = f"/api/v1/lockers/{locker_id}/credentials/revoke"
    refused = await api.post(url, headers=auth(seeded, "technician"), json={"reason": "x"})
    assert refused.status_code == 403
    courier = await api.post(
        f"/api/v1/lockers/{locker_id}/credentials/rotate", headers=auth(seeded, "courier"),
        json={"reason": "x"},
    )  # fmt: skip
    assert courier.status_code == 403
    revoked = await api.post(url, headers=auth(seeded, "admin"), json={"reason": "board stolen"})
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["provisioning_token"] is None
    assert revoked.json()["key_generation"] == 2
    credentials = await api.get(
        f"/api/v1/lockers/{locker_id}/credentials", headers=auth(seeded, "admin")
    )
    # The admin's view of the credentials shows the new generation's password.
    assert credentials.json()["mqtt_password"] == runtime.ctx.keys.mqtt_password(locker_id, 2)


async def test_a_decommissioned_locker_is_neither_rotated_nor_revoked(
    runtime: Runtime, seeded: Seeded
) -> None:
    locker_id = sorted(seeded.lockers)[0]
    admin = await actor(runtime, seeded, "admin")
    await runtime.services.provisioning.decommission(admin, locker_id, "retired")
    with pytest.raises(Conflict, match="decommissioned"):
        await runtime.services.rotation.rotate(admin, locker_id, "try")
    with pytest.raises(Conflict, match="decommissioned"):
        await runtime.services.rotation.revoke(admin, locker_id, "try")
    technician = await actor(runtime, seeded, "technician")
    with pytest.raises(NotAllowed):
        await runtime.services.rotation.revoke(technician, locker_id, "try")
    # Afterwards: still decommissioned, generation untouched, nothing audited as rotated.
    async with runtime.db.reader() as session:
        locker = await session.get(Locker, locker_id)
        assert locker is not None and (locker.status, locker.key_generation) == (
            "decommissioned", 1,
        )  # fmt: skip
        actions = (await session.scalars(select(AuditEntry.action))).all()
    assert "credentials_rotated" not in actions and "credentials_revoked" not in actions
