"""The alarms API: filters (site subtree, severity, type, state), roles, acknowledge and clear,
fleet health per county and township, and the Prometheus metrics."""

from __future__ import annotations

import httpx
import pytest

from controller.clock import ManualClock
from controller.runtime import Runtime
from controller.testing.seed import Seeded
from protocol.messages import DoorForced, DoorLeftOpen, PresenceState, Tamper
from tests.controller.support import LAYOUT, ScriptedLocker, auth


@pytest.fixture
async def two_lockers(runtime: Runtime, seeded: Seeded) -> tuple[ScriptedLocker, ScriptedLocker]:
    first, second = (ScriptedLocker(runtime, locker_id) for locker_id in sorted(seeded.lockers))
    for locker in (first, second):
        await locker.come_online(LAYOUT)
    await first.send(first.event(DoorForced("A01")), first.event(DoorLeftOpen("A02", 300_000)))
    await second.send(second.event(Tamper("tilt")))
    return first, second


async def test_filters_by_site_subtree_severity_type_and_state(
    api: httpx.AsyncClient, seeded: Seeded, two_lockers: tuple[ScriptedLocker, ScriptedLocker]
) -> None:
    first, second = two_lockers
    staff = auth(seeded, "operator")

    async def listed(**params: str | int | bool) -> list[tuple[str, str]]:
        response = await api.get("/api/v1/alarms", params=params, headers=staff)
        assert response.status_code == 200, response.text
        return sorted((a["locker_id"], a["type"]) for a in response.json())

    everything = [
        (first.locker_id, "door_forced"), (first.locker_id, "door_left_open"),
        (second.locker_id, "tamper"),
    ]  # fmt: skip
    assert await listed() == everything
    assert await listed(site_id=seeded.county_id) == everything, "the county holds them all"
    township = seeded.site_ids["t0"]
    assert seeded.locker_sites[first.locker_id] == township
    assert await listed(site_id=township) == everything[:2]
    assert await listed(site_id=seeded.site_ids["t1v0"]) == []
    assert await listed(severity="critical") == [everything[0], everything[2]]
    assert await listed(type="door_left_open") == [everything[1]]
    assert await listed(state="acknowledged") == []
    assert await listed(locker_id=second.locker_id, open_only=True) == [everything[2]]
    bad = await api.get("/api/v1/alarms", params={"severity": "apocalyptic"}, headers=staff)
    assert bad.status_code == 422
    unknown_site = await api.get("/api/v1/alarms", params={"site_id": 999_999}, headers=staff)
    assert unknown_site.status_code == 404


@pytest.mark.parametrize("role", ["courier", "agent"])
async def test_only_staff_see_and_handle_alarms(
    api: httpx.AsyncClient, seeded: Seeded, role: str,
    two_lockers: tuple[ScriptedLocker, ScriptedLocker],
) -> None:  # fmt: skip
    alarms = (await api.get("/api/v1/alarms", headers=auth(seeded, "technician"))).json()
    headers = auth(seeded, role)
    assert (await api.get("/api/v1/alarms", headers=headers)).status_code == 403
    assert (await api.get("/api/v1/fleet/health", headers=headers)).status_code == 403
    ack = await api.post(f"/api/v1/alarms/{alarms[0]['id']}/acknowledge", headers=headers)
    assert ack.status_code == 403 and ack.json()["error"]["code"] == "not_allowed"
    assert (await api.get("/api/v1/alarms")).status_code == 401


async def test_acknowledge_then_clear_and_illegal_steps_are_409(
    api: httpx.AsyncClient, seeded: Seeded, two_lockers: tuple[ScriptedLocker, ScriptedLocker]
) -> None:
    staff = auth(seeded, "operator")
    [forced] = (
        await api.get("/api/v1/alarms", params={"type": "door_forced"}, headers=staff)
    ).json()
    base = f"/api/v1/alarms/{forced['id']}"
    acked = await api.post(f"{base}/acknowledge", headers=staff)
    assert acked.status_code == 200 and acked.json()["state"] == "acknowledged"
    again = await api.post(f"{base}/acknowledge", headers=staff)
    assert again.status_code == 409 and again.json()["error"]["code"] == "illegal_transition"
    cleared = await api.post(f"{base}/clear", json={"note": "door re-fitted"}, headers=staff)
    assert cleared.status_code == 200
    assert (cleared.json()["state"], cleared.json()["clear_reason"]) == (
        "cleared",
        "door re-fitted",
    )
    assert (await api.post(f"{base}/clear", headers=staff)).status_code == 409
    assert (await api.post("/api/v1/alarms/999999/clear", headers=staff)).status_code == 404


async def test_fleet_health_per_county_and_township(
    api: httpx.AsyncClient, seeded: Seeded, clock: ManualClock,
    two_lockers: tuple[ScriptedLocker, ScriptedLocker],
) -> None:  # fmt: skip
    _first, second = two_lockers
    await second.send(second.presence(PresenceState.OFFLINE))
    response = await api.get("/api/v1/fleet/health", headers=auth(seeded, "operator"))
    assert response.status_code == 200
    health = {h["site_id"]: h for h in response.json()}
    county = health[seeded.county_id]
    assert (county["kind"], county["lockers"], county["online"], county["offline"]) == (
        "county", 2, 1, 1,
    )  # fmt: skip
    assert county["open_alarms"] == {"critical": 2, "major": 1, "minor": 0, "warning": 0}
    t0, t1 = health[seeded.site_ids["t0"]], health[seeded.site_ids["t1"]]
    assert (t0["online"], t0["offline"], t0["open_alarms"]["critical"]) == (1, 0, 1)
    assert (t1["online"], t1["offline"], t1["open_alarms"]["critical"]) == (0, 1, 1)
    assert set(health) == {seeded.county_id, seeded.site_ids["t0"], seeded.site_ids["t1"]}


async def test_metrics_are_exposed_for_prometheus(
    api: httpx.AsyncClient, two_lockers: tuple[ScriptedLocker, ScriptedLocker]
) -> None:
    response = await api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for line in (
        'lockerfleet_lockers{presence="online"} 2.0',
        'lockerfleet_alarms_open{severity="critical",type="door_forced"} 1.0',
        'lockerfleet_alarms_open{severity="critical",type="tamper"} 1.0',
        "lockerfleet_fleet_lockdown 0.0",
    ):
        assert line in text, line
    for name in (
        "lockerfleet_events_ingested_total",
        "lockerfleet_events_duplicate_total",
        "lockerfleet_messages_rejected_total",
        "lockerfleet_ingest_deferred_total",
        "lockerfleet_ingest_batch_seconds_total",
        "lockerfleet_ingest_queue_depth",
        "# TYPE lockerfleet_commands gauge",
        "lockerfleet_open_command_latency_samples",
    ):
        assert name in text, name
