"""The HTTP API over real HTTP: authentication, roles, validation, idempotency, error shape.

Each failing call must leave the database as it was: the tests count rows afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select

from controller.db.models import Command, Parcel
from controller.runtime import Runtime
from controller.testing.http import serve_http
from controller.testing.seed import DEFAULT_LAYOUT, Seeded
from tests.controller.support import LAYOUT, ScriptedLocker, auth, deposit_body


@pytest.fixture
async def api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_http(runtime) as base, httpx.AsyncClient(base_url=base) as client:
        yield client


async def count(runtime: Runtime, model: type[Parcel] | type[Command]) -> int:
    async with runtime.db.reader() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_health_and_docs(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "alive"}
    ready = await api.get("/readyz")
    assert ready.status_code == 503, "the bridge is not connected in this test"
    assert ready.json()["checks"]["database"] == "ok"
    assert (await api.get("/docs")).status_code == 200
    paths = (await api.get("/openapi.json")).json()["paths"]
    assert "/api/v1/deposits" in paths and "/api/v1/agent/parcels/{parcel_id}/collect" in paths


@pytest.mark.parametrize("header", [None, "Bearer lf_nonsense", "Basic abc"])
async def test_bad_tokens_are_refused(
    api: httpx.AsyncClient, runtime: Runtime, seeded: Seeded, header: str | None
) -> None:
    locker_id = next(iter(seeded.lockers))
    headers = {"Authorization": header} if header else {}
    response = await api.post("/api/v1/deposits", json=deposit_body(locker_id), headers=headers)
    assert response.status_code in (401, 403)
    assert response.json()["error"]["code"] in ("unauthenticated", "http_error")
    assert await count(runtime, Parcel) == 0


async def test_revoked_token_stops_working(
    api: httpx.AsyncClient, runtime: Runtime, seeded: Seeded
) -> None:
    me = await api.get("/api/v1/parcels", headers=auth(seeded, "courier"))
    assert me.status_code == 200
    admin = await runtime.services.admin.authenticate(seeded.tokens["admin"])
    courier = await runtime.services.admin.authenticate(seeded.tokens["courier"])
    assert admin is not None and courier is not None and courier.token_id is not None
    gone = await api.delete(f"/api/v1/tokens/{courier.token_id}", headers=auth(seeded, "admin"))
    assert gone.status_code == 204
    after = await api.get("/api/v1/parcels", headers=auth(seeded, "courier"))
    assert after.status_code == 401


@pytest.mark.parametrize(
    ("role", "method", "path", "body"),
    [
        ("agent", "POST", "/api/v1/deposits", "deposit"),
        ("courier", "POST", "/api/v1/lockers", {"locker_id": "X1", "site_id": 1, "name": "x"}),
        ("technician", "POST", "/api/v1/carriers", {"code": "yd", "name": "韵达"}),
        ("courier", "GET", "/api/v1/agent/parcels", None),
        ("agent", "GET", "/api/v1/parcels", None),
    ],
)
async def test_wrong_roles_are_refused(
    api: httpx.AsyncClient, runtime: Runtime, seeded: Seeded, role: str, method: str,
    path: str, body: object,
) -> None:  # fmt: skip
    if body == "deposit":
        body = deposit_body(next(iter(seeded.lockers)))
    response = await api.request(method, path, json=body, headers=auth(seeded, role))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "not_allowed"
    assert await count(runtime, Parcel) == 0 and await count(runtime, Command) == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"size": "XXL"}, "size"),
        ({"recipient_phone": "not-a-phone"}, "recipient_phone"),
        ({"tracking_number": ""}, "tracking_number"),
        ({"unexpected": 1}, "unexpected"),
        ({"locker_id": "bad/id"}, "locker_id"),
    ],
)
async def test_invalid_requests_say_what_is_wrong(
    api: httpx.AsyncClient, runtime: Runtime, seeded: Seeded, change: dict[str, object], field: str
) -> None:
    body = {**deposit_body(next(iter(seeded.lockers))), **change}
    response = await api.post("/api/v1/deposits", json=body, headers=auth(seeded, "courier"))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert any(p["field"] == field for p in error["problems"]), error
    assert await count(runtime, Parcel) == 0


async def test_offline_or_unknown_locker_and_missing_consent(
    api: httpx.AsyncClient, runtime: Runtime, seeded: Seeded
) -> None:
    locker_id = next(iter(seeded.lockers))
    courier = auth(seeded, "courier")
    offline = await api.post("/api/v1/deposits", json=deposit_body(locker_id), headers=courier)
    assert offline.status_code == 409 and offline.json()["error"]["code"] == "locker_unavailable"
    unknown = await api.post("/api/v1/deposits", json=deposit_body("NOPE"), headers=courier)
    assert unknown.status_code == 404
    await ScriptedLocker(runtime, locker_id).come_online(LAYOUT)
    body = deposit_body(locker_id)
    del body["consent_method"]
    refused = await api.post("/api/v1/deposits", json=body, headers=courier)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "consent_required"
    assert await count(runtime, Parcel) == 0 and await count(runtime, Command) == 0


async def test_deposits_are_idempotent(
    api: httpx.AsyncClient, runtime: Runtime, seeded: Seeded
) -> None:
    locker_id = next(iter(seeded.lockers))
    await ScriptedLocker(runtime, locker_id).come_online(LAYOUT)
    courier = auth(seeded, "courier")
    first = await api.post("/api/v1/deposits", json=deposit_body(locker_id), headers=courier)
    assert first.status_code == 201
    again = await api.post("/api/v1/deposits", json=deposit_body(locker_id), headers=courier)
    assert again.status_code == 200 and not again.json()["created"]
    assert again.json()["parcel"]["id"] == first.json()["parcel"]["id"]

    keyed = {**courier, "Idempotency-Key": "k-1"}
    body = deposit_body(locker_id, "SF2000000002")
    one = await api.post("/api/v1/deposits", json=body, headers=keyed)
    two = await api.post("/api/v1/deposits", json=body, headers=keyed)
    assert one.status_code == two.status_code == 201
    assert two.headers.get("Idempotent-Replay") == "true" and two.json() == one.json()
    other = await api.post(
        "/api/v1/deposits", json=deposit_body(locker_id, "SF2000000003"), headers=keyed
    )
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert await count(runtime, Parcel) == 2 and await count(runtime, Command) == 2


async def test_couriers_see_only_their_carriers_parcels(
    api: httpx.AsyncClient, runtime: Runtime, seeded: Seeded
) -> None:
    locker_id = next(iter(seeded.lockers))
    await ScriptedLocker(runtime, locker_id).come_online(LAYOUT)
    mine = await api.post(
        "/api/v1/deposits", json=deposit_body(locker_id), headers=auth(seeded, "courier")
    )
    parcel_id = mine.json()["parcel"]["id"]
    other = await api.get(f"/api/v1/parcels/{parcel_id}", headers=auth(seeded, "courier2"))
    assert other.status_code == 404
    assert (await api.get("/api/v1/parcels", headers=auth(seeded, "courier2"))).json() == []
    listed = (await api.get("/api/v1/parcels", headers=auth(seeded, "courier"))).json()
    assert [p["id"] for p in listed] == [parcel_id]
    assert listed[0]["recipient_phone"] == "139****0001", "couriers see a masked number"
    command_id = mine.json()["command_id"]
    seen = await api.get(f"/api/v1/commands/{command_id}", headers=auth(seeded, "courier"))
    assert seen.status_code == 200 and seen.json()["state"] == "pending"
    hidden = await api.get(f"/api/v1/commands/{command_id}", headers=auth(seeded, "courier2"))
    assert hidden.status_code == 404


async def test_free_compartments_near_a_site_service_state_and_quotas(
    api: httpx.AsyncClient, runtime: Runtime, seeded: Seeded
) -> None:
    locker_id = next(iter(seeded.lockers))
    await ScriptedLocker(runtime, locker_id).come_online(LAYOUT)
    village = seeded.site_ids["t0v0"]
    near = await api.get(
        "/api/v1/lockers", params={"near_site_id": village}, headers=auth(seeded, "courier")
    )
    assert near.status_code == 200
    listed = {lk["id"]: lk for lk in near.json()}
    assert locker_id in listed, "a township's locker serves its villages"
    assert listed[locker_id]["free"]["S/ambient"] == 3
    assert listed[locker_id]["free"]["M/chilled"] == 1

    gone = await api.put(
        f"/api/v1/lockers/{locker_id}/compartments/A01/service",
        json={"in_service": False, "reason": "hinge broken"},
        headers=auth(seeded, "technician"),
    )
    assert gone.status_code == 200 and not gone.json()["in_service"]
    no_reason = await api.put(
        f"/api/v1/lockers/{locker_id}/compartments/A02/service",
        json={"in_service": False},
        headers=auth(seeded, "technician"),
    )
    assert no_reason.status_code == 422
    state = (
        await api.get(f"/api/v1/lockers/{locker_id}", headers=auth(seeded, "technician"))
    ).json()
    assert state["free"]["S/ambient"] == 2
    assert next(c for c in state["compartments"] if c["label"] == "A01")[
        "out_of_service_reason"
    ] == ("hinge broken")

    sf = seeded.carrier_ids["sf"]
    quota = await api.put(
        f"/api/v1/lockers/{locker_id}/quotas",
        json={"carrier_id": sf, "max_compartments": 1},
        headers=auth(seeded, "admin"),
    )
    assert quota.status_code == 204
    courier = auth(seeded, "courier")
    first = await api.post(
        "/api/v1/deposits", json=deposit_body(locker_id, "SF2000000010"), headers=courier
    )
    assert first.status_code == 201
    second = await api.post(
        "/api/v1/deposits", json=deposit_body(locker_id, "SF2000000011"), headers=courier
    )
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "carrier_quota_exceeded"
    other = await api.post(
        "/api/v1/deposits",
        json=deposit_body(locker_id, "ZT2000000012"),
        headers=auth(seeded, "courier2"),
    )
    assert other.status_code == 201, "another carrier is not limited by SF's quota"
    assert await count(runtime, Parcel) == 2


async def test_agents_see_occupancy_of_their_villages_only(
    api: httpx.AsyncClient, runtime: Runtime, seeded: Seeded
) -> None:
    for locker_id in seeded.lockers:
        await ScriptedLocker(runtime, locker_id).come_online(LAYOUT)
    rows = (await api.get("/api/v1/agent/occupancy", headers=auth(seeded, "agent"))).json()
    # The agent serves the first township's villages: it sees that township's locker.
    assert [r["locker_id"] for r in rows] == [sorted(seeded.lockers)[0]]
    assert rows[0]["compartments"] == len(DEFAULT_LAYOUT) and rows[0]["holding"] == 0
    foreign = seeded.site_ids["t1"]
    refused = await api.get(
        "/api/v1/agent/occupancy", params={"site_id": foreign}, headers=auth(seeded, "agent")
    )
    assert refused.status_code == 403
