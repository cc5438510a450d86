"""Alarms, fleet health and the fleet lockdown switch (staff; only admins change the switch)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from controller.api.deps import CurrentActor, ServicesDep
from controller.domain.alarms import AlarmState, AlarmType, Severity
from controller.services.health import AlarmFilter, AlarmView, SiteHealth
from controller.services.open_guard import LockdownView

router = APIRouter(tags=["health and alarms"])


class ClearIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(default=None, max_length=200)


class LockdownIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool
    reason: str | None = Field(default=None, max_length=300)


@router.get(
    "/alarms",
    response_model=list[AlarmView],
    summary="Alarms, newest first: by site subtree, locker, severity, type, state",
)
async def list_alarms(
    actor: CurrentActor, services: ServicesDep, site_id: int | None = None,
    locker_id: str | None = None, severity: Severity | None = None,
    type: AlarmType | None = None, state: AlarmState | None = None,
    open_only: bool = False, limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[AlarmView]:  # fmt: skip
    query = AlarmFilter(site_id, locker_id, severity, type, state, open_only, limit)
    return await services.health.alarms(actor, query)


@router.post("/alarms/{alarm_id}/acknowledge", response_model=AlarmView)
async def acknowledge(alarm_id: int, actor: CurrentActor, services: ServicesDep) -> AlarmView:
    return await services.health.acknowledge(actor, alarm_id)


@router.post("/alarms/{alarm_id}/clear", response_model=AlarmView)
async def clear(
    alarm_id: int, actor: CurrentActor, services: ServicesDep, body: ClearIn | None = None
) -> AlarmView:
    return await services.health.clear(actor, alarm_id, body.note if body else None)


@router.get(
    "/fleet/health",
    response_model=list[SiteHealth],
    summary="Per county and township: lockers online/offline, open alarms by severity",
)
async def fleet_health(actor: CurrentActor, services: ServicesDep) -> list[SiteHealth]:
    return await services.health.fleet_health(actor)


@router.get("/fleet/lockdown", response_model=LockdownView)
async def lockdown(actor: CurrentActor, services: ServicesDep) -> LockdownView:
    return await services.defence.lockdown(actor)


@router.put(
    "/fleet/lockdown",
    response_model=LockdownView,
    summary="Refuse (or allow again) every remote door opening; keypad pickups keep working",
)
async def set_lockdown(
    body: LockdownIn, actor: CurrentActor, services: ServicesDep
) -> LockdownView:
    return await services.defence.set_lockdown(actor, enabled=body.enabled, reason=body.reason)
