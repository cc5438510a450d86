"""The registered lockers as a simulator fleet file (``lockerfleet fleet-file --out FILE``).

``locker-sim fleet --fleet FILE`` then runs simulated lockers with exactly the identities,
keys, broker passwords and layouts the controller expects — how the docker-compose stack's
simulator gets its fleet, and how a test bench can stand in for lockers registered for real.
The file holds secrets (command and code keys): keep it where the lockers' credentials go.
"""

from __future__ import annotations

from sqlalchemy import select

from controller.db.models import Compartment, Locker
from controller.runtime import Runtime
from controller.services.lockers import CompartmentSpec, credentials
from controller.testing.fleet import locker_spec
from firmware_sim.files import dump_fleet
from protocol.messages import SizeClass, TemperatureClass


async def fleet_file(runtime: Runtime) -> tuple[str, int]:
    """Return the fleet file of every locker not decommissioned, and how many it holds."""
    async with runtime.db.reader() as session:
        lockers = (
            await session.scalars(
                select(Locker).where(Locker.status != "decommissioned").order_by(Locker.id)
            )
        ).all()
        rows = (await session.scalars(select(Compartment).order_by(Compartment.label))).all()
    layouts: dict[str, list[CompartmentSpec]] = {}
    for row in rows:
        layouts.setdefault(row.locker_id, []).append(
            CompartmentSpec(row.label, SizeClass(row.size), TemperatureClass(row.temperature))
        )
    specs = [
        locker_spec(credentials(runtime.ctx, locker), layouts[locker.id])
        for locker in lockers
        if layouts.get(locker.id)
    ]
    return dump_fleet(specs), len(specs)
