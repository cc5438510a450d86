"""Provisioning tokens (technicians), redeeming one (the locker: the token is its only
credential), and decommissioning (admins)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from controller.api.deps import CurrentActor, ServicesDep
from controller.services.provisioning import IssuedProvisioningToken
from controller.services.views import Credentials

router = APIRouter(tags=["provisioning"])


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ttl_minutes: int = Field(default=30, ge=1, le=24 * 60)


class RedeemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=200)
    locker_id: str | None = Field(
        default=None,
        max_length=64,
        description="The locker presenting the token (the bench tool sends it): a token issued "
        "for another locker is then refused and stays unused.",
    )


class DecommissionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=200)


@router.post(
    "/lockers/{locker_id}/provisioning-tokens",
    response_model=IssuedProvisioningToken,
    status_code=201,
    summary="A single-use, short-lived provisioning token for a locker (shown once)",
)
async def issue(
    locker_id: str, actor: CurrentActor, services: ServicesDep, body: TokenRequest | None = None
) -> IssuedProvisioningToken:
    ttl = timedelta(minutes=(body or TokenRequest()).ttl_minutes)
    return await services.provisioning.issue_token(actor, locker_id, ttl)


@router.post(
    "/provisioning/redeem",
    response_model=Credentials,
    summary="Trade a provisioning token for the locker's credentials (once)",
)
async def redeem(body: RedeemIn, services: ServicesDep) -> Credentials:
    return await services.provisioning.redeem(body.token, locker_id=body.locker_id, via="http")


@router.post("/lockers/{locker_id}/decommission", status_code=204)
async def decommission(
    locker_id: str, body: DecommissionIn, actor: CurrentActor, services: ServicesDep
) -> Response:
    await services.provisioning.decommission(actor, locker_id, body.reason)
    return Response(status_code=204)
