"""Administration: sites, carriers, quotas, users, tokens, standing consent."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Response

from controller.api.deps import CurrentActor, ServicesDep
from controller.api.schemas import CarrierIn, ConsentIn, QuotaIn, SiteIn, TokenIn, UserIn
from controller.services.admin import IssuedToken, SiteView, UserView

router = APIRouter(tags=["administration"])


@router.post("/sites", response_model=SiteView, status_code=201)
async def create_site(body: SiteIn, actor: CurrentActor, services: ServicesDep) -> SiteView:
    return await services.admin.create_site(
        actor, kind=body.kind, name=body.name, parent_id=body.parent_id,
        division_code=body.division_code,
    )  # fmt: skip


@router.get("/sites", response_model=list[SiteView], summary="The county/township/village tree")
async def sites(actor: CurrentActor, services: ServicesDep) -> list[SiteView]:
    return await services.admin.sites(actor)


@router.post("/carriers", status_code=201)
async def create_carrier(
    body: CarrierIn, actor: CurrentActor, services: ServicesDep
) -> dict[str, int]:
    return {"id": await services.admin.create_carrier(actor, code=body.code, name=body.name)}


@router.put(
    "/lockers/{locker_id}/quotas",
    status_code=204,
    summary="Limit a carrier's compartments at a locker (null lifts it)",
)
async def set_quota(
    locker_id: str, body: QuotaIn, actor: CurrentActor, services: ServicesDep
) -> Response:
    await services.admin.set_quota(
        actor, locker_id=locker_id, carrier_id=body.carrier_id,
        max_compartments=body.max_compartments,
    )  # fmt: skip
    return Response(status_code=204)


@router.post("/users", response_model=UserView, status_code=201)
async def create_user(body: UserIn, actor: CurrentActor, services: ServicesDep) -> UserView:
    return await services.admin.create_user(
        actor, name=body.name, role=body.role, carrier_code=body.carrier_code,
        village_ids=body.village_ids, phone=body.phone,
    )  # fmt: skip


@router.post(
    "/users/{user_id}/tokens",
    response_model=IssuedToken,
    status_code=201,
    summary="Issue a bearer token (shown once)",
)
async def issue_token(
    user_id: int, body: TokenIn, actor: CurrentActor, services: ServicesDep
) -> IssuedToken:
    ttl = timedelta(days=body.ttl_days) if body.ttl_days else None
    return await services.admin.issue_token(actor, user_id=user_id, label=body.label, ttl=ttl)


@router.delete("/tokens/{token_id}", status_code=204)
async def revoke_token(token_id: int, actor: CurrentActor, services: ServicesDep) -> Response:
    await services.admin.revoke_token(actor, token_id)
    return Response(status_code=204)


@router.post(
    "/consents", status_code=204, summary="Record a villager's standing consent to locker delivery"
)
async def record_consent(body: ConsentIn, actor: CurrentActor, services: ServicesDep) -> Response:
    await services.admin.record_standing_consent(
        actor, phone=body.phone, method=body.method, village_site_id=body.village_site_id
    )
    return Response(status_code=204)
