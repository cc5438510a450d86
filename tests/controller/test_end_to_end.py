"""The whole system on real parts: the controller (HTTP API, MQTT bridge, database) and
simulated locker firmware, talking through a real Mosquitto.

register → deposit through the API → door events from the simulated locker → code texted →
code typed on the simulated keypad → door opens → compartment free, occupancy right; a pickup
while the locker is offline, reconciled when it returns; the controller restarted mid-deposit.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from controller.runtime import Runtime, build_runtime
from controller.testing.fleet import locker_spec
from controller.testing.http import serve_http
from controller.testing.seed import DEFAULT_LAYOUT, Seeded, seed_county
from controller.testing.waiting import eventually
from firmware_sim.faults import Fault, FaultKind
from firmware_sim.fleet import FleetOptions, MqttFleet
from firmware_sim.outbox import OutboxLimits
from firmware_sim.people import AttendantPolicy, Delays
from firmware_sim.settings import Settings as FirmwareSettings
from protocol.urls import BrokerAddress
from tests.controller.conftest import controller_settings
from tests.controller.support import RecordingSender

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


def fleet_for(seeded: Seeded, broker: BrokerAddress, topic_root: str, **options: Any) -> MqttFleet:
    specs = [locker_spec(c, DEFAULT_LAYOUT) for c in seeded.lockers.values()]
    return MqttFleet(specs, broker, FleetOptions(
        topic_root=topic_root, keepalive_s=5,
        settings=FirmwareSettings(heartbeat_s=5),
        attendant=AttendantPolicy(delays=Delays.fast()), **options,
    ))  # fmt: skip


class System:
    """A running controller (runtime + HTTP) and its helpers for one test."""

    def __init__(self, runtime: Runtime, api: httpx.AsyncClient, seeded: Seeded,
                 sms: RecordingSender) -> None:  # fmt: skip
        self.runtime, self.api, self.seeded, self.sms = runtime, api, seeded, sms

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.seeded.tokens[role]}"}

    async def locker(self, locker_id: str) -> dict[str, Any]:
        response = await self.api.get(
            f"/api/v1/lockers/{locker_id}", headers=self.auth("technician")
        )
        assert response.status_code == 200
        return dict(response.json())

    async def parcel(self, parcel_id: int) -> dict[str, Any]:
        response = await self.api.get(f"/api/v1/parcels/{parcel_id}", headers=self.auth("courier"))
        return dict(response.json())

    async def wait_online(self, locker_id: str) -> None:
        async def online() -> bool:
            state = await self.locker(locker_id)
            return bool(state["online"] and state["status"] == "active")

        await eventually(online, what=f"{locker_id} online")

    async def wait_parcel(self, parcel_id: int, state: str, within: float = 20.0) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            parcel = await self.parcel(parcel_id)
            return parcel if parcel["state"] == state else None

        found: dict[str, Any] = await eventually(reached, within, f"parcel {parcel_id} {state}")
        return found

    async def deposit(
        self, locker_id: str, tracking: str, phone: str, size: str = "S"
    ) -> dict[str, Any]:
        response = await self.api.post(
            "/api/v1/deposits",
            headers=self.auth("courier"),
            json={
                "tracking_number": tracking,
                "locker_id": locker_id,
                "size": size,
                "recipient_phone": phone,
                "consent_method": "sms_reply",
            },
        )
        assert response.status_code == 201, response.text
        return dict(response.json())


@pytest.fixture
async def system(
    migrated_url: str, topic_root: str, mqtt_broker: BrokerAddress, sms: RecordingSender
) -> AsyncIterator[System]:
    runtime = build_runtime(controller_settings(migrated_url, topic_root, mqtt_broker), sender=sms)
    seeded = await seed_county(runtime, lockers=2, prefix=f"E{uuid.uuid4().hex[:6]}")
    async with serve_http(runtime, start=True) as base, httpx.AsyncClient(base_url=base) as api:
        # Lockers connecting before the controller subscribed would have their first birth
        # missed, and resent only after the firmware's 30 s retransmission.
        bridge = runtime.bridge
        assert bridge is not None
        await eventually(lambda: bridge.stats.connected, what="the controller subscribed")
        yield System(runtime, api, seeded, sms)
    await runtime.stop()


async def test_deposit_then_pickup_by_code_on_the_keypad(
    system: System, mqtt_broker: BrokerAddress, topic_root: str
) -> None:
    locker_id = next(iter(system.seeded.lockers))
    with fleet_for(system.seeded, mqtt_broker, topic_root) as fleet:
        await system.wait_online(locker_id)
        started = await system.deposit(locker_id, "SF3000000001", "13500000001")
        parcel_id = started["parcel"]["id"]
        label = started["parcel"]["compartment"]
        notified = await system.wait_parcel(parcel_id, "notified")
        assert notified["deadline_at"] is not None
        command = await system.api.get(
            f"/api/v1/commands/{started['command_id']}", headers=system.auth("courier")
        )
        assert command.json()["state"] == "succeeded"
        view = fleet.view(locker_id)
        assert view.compartments[label].occupied and not view.compartments[label].door_open

        code = await eventually(lambda: system.sms.latest_code("13500000001"), what="pickup SMS")
        await eventually(lambda: fleet.view(locker_id).codes_cached == 1, what="code synced")
        fleet.run(
            lambda: fleet.people.recipient_picks_up(
                fleet.lockers[locker_id], code, delays=Delays.fast()
            )
        )
        picked = await system.wait_parcel(parcel_id, "picked_up")
        assert picked["picked_up_via"] == "keypad"

        async def compartment_free() -> bool:
            state = await system.locker(locker_id)
            row = next(c for c in state["compartments"] if c["label"] == label)
            return not row["occupied"] and row["door"] == "closed" and row["parcel_ref"] is None

        await eventually(compartment_free, what="compartment free")
        physical = fleet.view(locker_id).compartments[label]
        assert not physical.occupied and not physical.door_open
        # The controller's occupancy equals the locker's own, compartment by compartment.
        state = await system.locker(locker_id)
        mine = {c["label"]: c["occupied"] for c in state["compartments"]}
        theirs = {c.id: c.occupied for c in fleet.view(locker_id).compartments.values()}
        assert mine == theirs


async def test_pickup_while_offline_is_reconciled_when_the_locker_returns(
    system: System, mqtt_broker: BrokerAddress, topic_root: str
) -> None:
    locker_id = next(iter(system.seeded.lockers))
    with fleet_for(system.seeded, mqtt_broker, topic_root) as fleet:
        await system.wait_online(locker_id)
        started = await system.deposit(locker_id, "SF3000000002", "13500000002")
        parcel_id = started["parcel"]["id"]
        await system.wait_parcel(parcel_id, "notified")
        code = await eventually(lambda: system.sms.latest_code("13500000002"), what="pickup SMS")
        await eventually(lambda: fleet.view(locker_id).codes_cached == 1, what="code synced")

        assert fleet.inject(locker_id, Fault(FaultKind.NETWORK_DROP, duration_ms=12_000))

        async def offline() -> bool:
            return not (await system.locker(locker_id))["online"]

        await eventually(offline, what="controller sees the locker offline")
        fleet.keypad_enter(locker_id, code)  # the villager types the code; the locker decides
        await eventually(
            lambda: fleet.view(locker_id).counters.get("pickup", 0) == 1,
            what="offline pickup on the locker",
        )
        assert (await system.parcel(parcel_id))["state"] == "notified", "nobody told us yet"

        picked = await system.wait_parcel(parcel_id, "picked_up", within=60)
        assert picked["picked_up_via"] == "keypad_offline"
        await system.wait_online(locker_id)
        await eventually(
            lambda: fleet.view(locker_id).pending_events == 0,
            what="everything acknowledged, nothing left in the locker's buffer",
        )


async def test_controller_restarted_mid_deposit_finishes_it(
    migrated_url: str, topic_root: str, mqtt_broker: BrokerAddress, sms: RecordingSender
) -> None:
    """The controller dies after the door opened; the courier puts the parcel in and closes
    the door while no controller runs; a new controller instance finishes the deposit."""
    first = build_runtime(controller_settings(migrated_url, topic_root, mqtt_broker), sender=sms)
    seeded = await seed_county(first, lockers=1, prefix=f"R{uuid.uuid4().hex[:6]}")
    locker_id = next(iter(seeded.lockers))
    specs = [locker_spec(c, DEFAULT_LAYOUT) for c in seeded.lockers.values()]
    # Lockers resend what is not acknowledged after 2 s, doubling up to 5 s (firmware default:
    # 10 s up to 5 min), so the test need not wait minutes for the retransmissions.
    options = FleetOptions(
        topic_root=topic_root,
        keepalive_s=5,
        attendant=None,
        settings=FirmwareSettings(heartbeat_s=5),
        limits=OutboxLimits(retransmit_ms=2_000, retransmit_max_ms=5_000),
    )
    with MqttFleet(specs, mqtt_broker, options) as fleet:
        async with serve_http(first, start=True) as base, httpx.AsyncClient(base_url=base) as api:
            system = System(first, api, seeded, sms)
            await system.wait_online(locker_id)
            started = await system.deposit(locker_id, "SF3000000003", "13500000003")
            label = started["parcel"]["compartment"]
            await eventually(lambda: label in fleet.view(locker_id).released, what="lock released")
        await first.stop()  # the controller is gone, mid-deposit

        fleet.act(locker_id, lambda locker: locker.open_door(label))
        fleet.act(locker_id, lambda locker: locker.put_item(label))
        fleet.act(locker_id, lambda locker: locker.close_door(label))
        await eventually(
            lambda: fleet.view(locker_id).pending_events > 0,
            what="the locker keeps the unacknowledged door events",
        )

        second = build_runtime(
            controller_settings(migrated_url, topic_root, mqtt_broker), sender=sms
        )
        async with serve_http(second, start=True) as base, httpx.AsyncClient(base_url=base) as api:
            system = System(second, api, seeded, sms)
            parcel = await system.wait_parcel(started["parcel"]["id"], "notified", within=40)
            assert parcel["compartment"] == label
            await eventually(lambda: sms.latest_code("13500000003"), what="pickup SMS")
            await eventually(
                lambda: fleet.view(locker_id).pending_events == 0,
                within=30,
                what="the new controller acknowledged everything",
            )
        await second.stop()
