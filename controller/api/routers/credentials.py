"""Rotating (admins, technicians) and revoking (admins) a locker's broker password and command
key. Pickup codes in the locker's cache stay valid: the code key is not part of them."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from controller.api.deps import CurrentActor, ServicesDep
from controller.services.rotation import CredentialChange

router = APIRouter(tags=["provisioning"])


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=200)
    ttl_minutes: int = Field(default=30, ge=1, le=24 * 60)
    """How long the provisioning token to re-provision with lives."""


class RevokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=200)


@router.post(
    "/lockers/{locker_id}/credentials/rotate",
    response_model=CredentialChange,
    status_code=201,
    summary="New broker password and command key; returns a provisioning token (shown once)",
)
async def rotate(
    locker_id: str, body: RotateIn, actor: CurrentActor, services: ServicesDep
) -> CredentialChange:
    ttl = timedelta(minutes=body.ttl_minutes)
    return await services.rotation.rotate(actor, locker_id, body.reason, ttl)


@router.post(
    "/lockers/{locker_id}/credentials/revoke",
    response_model=CredentialChange,
    summary="Shut the locker's broker identity and command key out; nothing is issued",
)
async def revoke(
    locker_id: str, body: RevokeIn, actor: CurrentActor, services: ServicesDep
) -> CredentialChange:
    return await services.rotation.revoke(actor, locker_id, body.reason)
