"""Fleet inventory for staff: which firmware the lockers run, and which are below the minimum."""

from __future__ import annotations

from fastapi import APIRouter

from controller.api.deps import CurrentActor, ServicesDep
from controller.services.inventory import FirmwareInventory

router = APIRouter(tags=["fleet inventory"])


@router.get(
    "/fleet/firmware",
    response_model=FirmwareInventory,
    summary="Lockers per firmware version (in a site's subtree), and those below the minimum",
)
async def firmware(
    actor: CurrentActor, services: ServicesDep, site_id: int | None = None
) -> FirmwareInventory:
    return await services.inventory.firmware(actor, site_id)
