"""Alarms from the simulated firmware's own faults, through a real Mosquitto: each fault raises
its alarm while it lasts and the alarm clears when it ends. (A chilled compartment cools down
at the simulator's physical rate, minutes of real time, so the temperature alarm is tested with
scripted events in ``test_alarms.py``.)"""

from __future__ import annotations

from typing import Any

import pytest

from controller.testing.waiting import eventually
from firmware_sim.faults import Fault, FaultKind
from protocol.messages import Sensor
from protocol.urls import BrokerAddress
from tests.controller.test_end_to_end import System, fleet_for
from tests.controller.test_end_to_end import system as system  # the fixture

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

FAULTS = [
    (Fault(FaultKind.STUCK_SENSOR, 3000, "B01", Sensor.OCCUPANCY), "sensor_fault", "B01"),
    (Fault(FaultKind.POWER_LOSS, 3000, battery=True), "on_battery", None),
    (Fault(FaultKind.CLOCK_SKEW, 8000, skew_ms=20 * 60_000), "clock_skew", None),
]  # fmt: skip


async def alarms(system: System, locker_id: str, type_: str) -> list[dict[str, Any]]:
    response = await system.api.get(
        "/api/v1/alarms",
        params={"locker_id": locker_id, "type": type_},
        headers=system.auth("operator"),
    )
    assert response.status_code == 200
    return list(response.json())


@pytest.mark.parametrize(("fault", "type_", "compartment"), FAULTS, ids=[f[1] for f in FAULTS])
async def test_a_simulated_fault_raises_its_alarm_and_clears_it_when_over(
    system: System, mqtt_broker: BrokerAddress, topic_root: str, fault: Fault, type_: str,
    compartment: str | None,
) -> None:  # fmt: skip
    locker_id = sorted(system.seeded.lockers)[0]
    with fleet_for(system.seeded, mqtt_broker, topic_root) as fleet:
        await system.wait_online(locker_id)
        assert fleet.inject(locker_id, fault)
        [raised] = await eventually(
            lambda: alarms(system, locker_id, type_), within=30, what=f"{type_} raised"
        )
        assert raised["compartment"] == compartment

        async def cleared() -> bool:
            rows = await alarms(system, locker_id, type_)
            return bool(rows) and all(r["state"] == "cleared" for r in rows)

        await eventually(cleared, within=40, what=f"{type_} cleared")
