"""Firmware inventory (real databases, scripted lockers): counts per version as the births
report them, newest first, within a site's subtree, and the lockers below the fleet minimum."""

from __future__ import annotations

import dataclasses
import uuid

import httpx

from controller.runtime import Runtime
from controller.testing.seed import seed_county
from protocol.messages import CompartmentState, DoorState, LockState
from tests.controller.support import LAYOUT, ScriptedLocker, actor


async def born(runtime: Runtime, locker_id: str, firmware: str, boot_id: int = 1) -> None:
    locker = ScriptedLocker(runtime, locker_id, boot_id=boot_id)
    compartments = [
        CompartmentState(label, size, temp, DoorState.CLOSED, LockState.LOCKED, False, True)
        for label, size, temp in LAYOUT
    ]
    birth = dataclasses.replace(locker.birth(compartments), firmware=firmware)
    await locker.send(locker.presence(), birth)


async def test_firmware_versions_are_counted_per_site_subtree(
    runtime: Runtime, api: httpx.AsyncClient
) -> None:
    # Lockers 1..4 stand at township t0, township t1, and t0's villages v0 and v1.
    county = await seed_county(runtime, lockers=4, prefix=f"F{uuid.uuid4().hex[:6]}")
    first, second, third, _never_born = sorted(county.lockers)
    runtime.settings.fleet_min_firmware = "1.5.0"
    await born(runtime, first, "1.4.2")
    await born(runtime, second, "1.2.0")
    await born(runtime, third, "1.10.0")  # fourth never sends a birth
    admin = await actor(runtime, county, "operator")

    fleet = await runtime.services.inventory.firmware(admin)
    assert (fleet.minimum, fleet.lockers, fleet.unknown) == ("1.5.0", 4, 1)
    assert [(v.firmware, v.lockers, v.below_minimum) for v in fleet.versions] == [
        ("1.10.0", 1, False), ("1.4.2", 1, True), ("1.2.0", 1, True),
    ]  # fmt: skip
    assert [(o.locker_id, o.firmware) for o in fleet.below_minimum] == [
        (first, "1.4.2"), (second, "1.2.0"),
    ]  # fmt: skip

    township = await runtime.services.inventory.firmware(admin, county.site_ids["t0"])
    assert (township.lockers, township.unknown) == (3, 1)
    assert [v.firmware for v in township.versions] == ["1.10.0", "1.4.2"]
    assert [o.locker_id for o in township.below_minimum] == [first]

    # An upgrade shows at the birth after the reboot; afterwards nothing else has changed.
    await born(runtime, first, "1.6.0", boot_id=2)
    after = await runtime.services.inventory.firmware(admin)
    assert [o.locker_id for o in after.below_minimum] == [second]
    assert sum(v.lockers for v in after.versions) + after.unknown == after.lockers == 4

    headers = {"Authorization": f"Bearer {county.tokens['technician']}"}
    response = await api.get("/api/v1/fleet/firmware", headers=headers)
    assert response.status_code == 200 and response.json()["versions"][0]["firmware"] == "1.10.0"
    missing = await api.get("/api/v1/fleet/firmware?site_id=999999", headers=headers)
    assert missing.status_code == 404
    courier = {"Authorization": f"Bearer {county.tokens['courier']}"}
    assert (await api.get("/api/v1/fleet/firmware", headers=courier)).status_code == 403
