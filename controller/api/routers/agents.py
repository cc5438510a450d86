"""Village agents: occupancy, waiting parcels, collection for villagers, outbound produce."""

from __future__ import annotations

from fastapi import APIRouter, Response

from controller.api.deps import CurrentActor, ServicesDep
from controller.api.schemas import AgentCollectIn, AuthoriseIn, OutboundIn
from controller.services.agents import OutboundBooking
from controller.services.views import OccupancyRow, ParcelView

router = APIRouter(prefix="/agent", tags=["village agents"])


@router.get(
    "/occupancy",
    response_model=list[OccupancyRow],
    summary="Occupancy of the lockers in your villages and townships",
)
async def occupancy(
    actor: CurrentActor, services: ServicesDep, site_id: int | None = None,
    locker_id: str | None = None,
) -> list[OccupancyRow]:  # fmt: skip
    return await services.agents.occupancy(actor, site_id=site_id, locker_id=locker_id)


@router.get(
    "/parcels",
    response_model=list[ParcelView],
    summary="Parcels waiting for villagers of your villages",
)
async def waiting(
    actor: CurrentActor, services: ServicesDep, village_id: int | None = None,
    locker_id: str | None = None,
) -> list[ParcelView]:  # fmt: skip
    return await services.agents.waiting(actor, village_id=village_id, locker_id=locker_id)


@router.post(
    "/parcels/{parcel_id}/collect",
    response_model=ParcelView,
    summary="Open the door to collect a parcel for a villager (code or standing authorisation)",
)
async def collect(
    parcel_id: int, body: AgentCollectIn, actor: CurrentActor, services: ServicesDep
) -> ParcelView:
    return await services.agents.collect(actor, parcel_id, code=body.code, standing=body.standing)


@router.post(
    "/outbound",
    response_model=ParcelView,
    status_code=201,
    summary="Book a compartment for produce going out; the sender gets a drop-off code",
)
async def book(body: OutboundIn, actor: CurrentActor, services: ServicesDep) -> ParcelView:
    return await services.agents.book_outbound(actor, OutboundBooking(**body.model_dump()))


@router.post(
    "/authorisations",
    status_code=204,
    summary="Record a villager's standing authorisation for agent pickup",
)
async def authorise(body: AuthoriseIn, actor: CurrentActor, services: ServicesDep) -> Response:
    await services.agents.authorise(actor, body.recipient_phone, body.method)
    return Response(status_code=204)
