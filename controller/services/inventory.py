"""Firmware inventory: which firmware the fleet runs, and which lockers are below the minimum.

Every birth records the locker's firmware version (:mod:`~controller.services.locker_state`);
this view counts the lockers per version, newest first, optionally within a site's subtree,
and lists the lockers below the fleet's minimum (``fleet_min_firmware``), the same rule as the
``firmware_outdated`` alarm. A locker that has never sent a birth has no known version and is
counted apart. Decommissioned lockers are left out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select

from controller.db.models import Locker
from controller.domain.alarms import firmware_outdated, version_key
from controller.services import sites
from controller.services.context import Actor, Context
from controller.services.lockers import STAFF, require


@dataclass(frozen=True)
class FirmwareCount:
    firmware: str
    lockers: int
    below_minimum: bool


@dataclass(frozen=True)
class OutdatedLocker:
    locker_id: str
    site_id: int
    firmware: str
    online: bool


@dataclass(frozen=True)
class FirmwareInventory:
    minimum: str | None
    """The fleet's minimum firmware (``fleet_min_firmware``), if one is set."""
    lockers: int
    versions: list[FirmwareCount]
    """Lockers per reported version, newest version first."""
    unknown: int
    """Lockers that have not reported a version yet (registered, never born)."""
    below_minimum: list[OutdatedLocker]


def _order(firmware: str) -> tuple[tuple[int, int, int, int], str]:
    try:
        return version_key(firmware), firmware
    except ValueError:  # never stored (births are validated), but never fatal to a report
        return (-1, -1, -1, -1), firmware


class Inventory:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def firmware(self, actor: Actor, site_id: int | None = None) -> FirmwareInventory:
        """The firmware inventory of the fleet or of a site's subtree (staff).

        Raises :class:`NotFound` for an unknown site.
        """
        require(actor, *STAFF)
        minimum = self.ctx.settings.fleet_min_firmware
        async with self.ctx.db.reader() as session:
            query = select(Locker.id, Locker.site_id, Locker.firmware, Locker.online).where(
                Locker.status != "decommissioned"
            )
            if site_id is not None:
                query = query.where(Locker.site_id.in_(await sites.subtree(session, site_id)))
            rows = (await session.execute(query.order_by(Locker.id))).all()
        counts = Counter(firmware for _, _, firmware, _ in rows if firmware)
        versions = [
            FirmwareCount(firmware, n, firmware_outdated(firmware, minimum))
            for firmware, n in sorted(counts.items(), key=lambda c: _order(c[0]), reverse=True)
        ]
        outdated = [
            OutdatedLocker(locker_id, site, firmware, online)
            for locker_id, site, firmware, online in rows
            if firmware and firmware_outdated(firmware, minimum)
        ]
        unknown = sum(1 for row in rows if not row[2])
        return FirmwareInventory(minimum, len(rows), versions, unknown, outdated)
