"""Lockers: finding free compartments (couriers), registration and live state (technicians)."""

from __future__ import annotations

from fastapi import APIRouter

from controller.api.deps import CurrentActor, ServicesDep
from controller.api.schemas import LockerIn, ServiceIn
from controller.services.lockers import CompartmentSpec
from controller.services.views import CompartmentView, Credentials, LockerView

router = APIRouter(tags=["lockers"])


@router.get(
    "/lockers",
    response_model=list[LockerView],
    summary="Lockers at a site, or around it (its township), with free compartments",
)
async def list_lockers(
    actor: CurrentActor, services: ServicesDep, site_id: int | None = None,
    near_site_id: int | None = None,
) -> list[LockerView]:  # fmt: skip
    return await services.lockers.list(actor, site_id=site_id, near_site_id=near_site_id)


@router.post(
    "/lockers",
    response_model=Credentials,
    status_code=201,
    summary="Register a locker and its layout; returns its credentials once",
)
async def register(body: LockerIn, actor: CurrentActor, services: ServicesDep) -> Credentials:
    return await services.lockers.register(
        actor, locker_id=body.locker_id, site_id=body.site_id, name=body.name,
        address=body.address,
        compartments=[CompartmentSpec(c.label, c.size, c.temperature) for c in body.compartments],
    )  # fmt: skip


@router.get(
    "/lockers/{locker_id}",
    response_model=LockerView,
    summary="Live state: compartments, telemetry, code cache",
)
async def state(locker_id: str, actor: CurrentActor, services: ServicesDep) -> LockerView:
    return await services.lockers.state(actor, locker_id)


@router.put(
    "/lockers/{locker_id}/compartments/{label}/service",
    response_model=CompartmentView,
    summary="Take a compartment out of service (with a reason) or put it back",
)
async def set_service(
    locker_id: str, label: str, body: ServiceIn, actor: CurrentActor, services: ServicesDep
) -> CompartmentView:
    return await services.lockers.set_in_service(
        actor, locker_id, label, in_service=body.in_service, reason=body.reason
    )


@router.get(
    "/lockers/{locker_id}/credentials",
    response_model=Credentials,
    summary="The locker's credentials again (admin)",
)
async def show_credentials(
    locker_id: str, actor: CurrentActor, services: ServicesDep
) -> Credentials:
    return await services.lockers.credentials(actor, locker_id)
