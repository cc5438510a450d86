"""Couriers: deposits, confirmations, cancellations, collections; their carrier's parcels."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from controller.api.deps import CurrentActor, RuntimeDep, ServicesDep
from controller.api.idempotency import run_once
from controller.api.schemas import DepositIn
from controller.services.deposits import DepositRequest
from controller.services.views import DepositStarted, ParcelView

router = APIRouter(tags=["couriers"])
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


@router.post(
    "/deposits",
    response_model=DepositStarted,
    status_code=201,
    summary="Reserve the smallest free compartment that fits and open it",
    responses={200: {"description": "The same tracking number was deposited already"}},
)
async def start_deposit(
    body: DepositIn, actor: CurrentActor, services: ServicesDep, runtime: RuntimeDep,
    request: Request, key: IdempotencyKey = None,
) -> JSONResponse:  # fmt: skip
    async def work() -> tuple[int, DepositStarted]:
        started = await services.deposits.start(actor, DepositRequest(**body.model_dump()))
        return (201 if started.created else 200), started

    return await run_once(runtime, actor, request, key, work)


@router.get("/parcels", response_model=list[ParcelView], summary="Your carrier's parcels")
async def list_parcels(
    actor: CurrentActor, services: ServicesDep, state: str | None = None,
    locker_id: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[ParcelView]:  # fmt: skip
    return await services.deposits.list(actor, state=state, locker_id=locker_id, limit=limit)


@router.get("/parcels/{parcel_id}", response_model=ParcelView)
async def get_parcel(parcel_id: int, actor: CurrentActor, services: ServicesDep) -> ParcelView:
    return await services.deposits.get(actor, parcel_id)


@router.post(
    "/parcels/{parcel_id}/confirm",
    response_model=ParcelView,
    summary="Confirm the parcel is inside (when the occupancy sensor did not)",
)
async def confirm(parcel_id: int, actor: CurrentActor, services: ServicesDep) -> ParcelView:
    return await services.deposits.confirm(actor, parcel_id)


@router.post(
    "/parcels/{parcel_id}/cancel",
    response_model=ParcelView,
    summary="Cancel a deposit not yet completed",
)
async def cancel(parcel_id: int, actor: CurrentActor, services: ServicesDep) -> ParcelView:
    return await services.deposits.cancel(actor, parcel_id)


@router.post(
    "/parcels/{parcel_id}/reopen",
    response_model=DepositStarted,
    summary="Open the door again for a deposit not yet completed",
)
async def reopen(parcel_id: int, actor: CurrentActor, services: ServicesDep) -> DepositStarted:
    return await services.deposits.reopen(actor, parcel_id)


@router.post(
    "/parcels/{parcel_id}/collect",
    response_model=DepositStarted,
    summary="Open the door to take back an expired parcel or collect produce",
)
async def collect(parcel_id: int, actor: CurrentActor, services: ServicesDep) -> DepositStarted:
    return await services.deposits.collect(actor, parcel_id)
