"""Configuration shadow of lockers: desired versus reported (staff read it; admins and
technicians change the desired settings), and the fleet's lockers out of sync."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from controller.api.deps import CurrentActor, ServicesDep
from controller.services.config_shadow import ConfigView

router = APIRouter(tags=["configuration"])


class ConfigIn(BaseModel):
    """Settings to change; those left out keep their desired value. Ranges are the protocol's
    (``set_config``), checked by the service so that the one error says what is wrong."""

    model_config = ConfigDict(extra="forbid")
    heartbeat_s: StrictInt | None = None
    door_open_alarm_s: StrictInt | None = None
    lock_release_s: StrictInt | None = None
    keypad_max_attempts: StrictInt | None = None
    keypad_lockout_s: StrictInt | None = None
    chilled_min_deci_celsius: StrictInt | None = None
    chilled_max_deci_celsius: StrictInt | None = None
    note: str | None = Field(default=None, max_length=200)


@router.get(
    "/lockers/{locker_id}/config",
    response_model=ConfigView,
    summary="Desired and reported configuration, and whether the locker is in sync",
)
async def get_config(locker_id: str, actor: CurrentActor, services: ServicesDep) -> ConfigView:
    return await services.config.get(actor, locker_id)


@router.patch(
    "/lockers/{locker_id}/config",
    response_model=ConfigView,
    summary="Change desired settings: a new version, sent to the locker as a signed set_config",
)
async def set_config(
    locker_id: str, body: ConfigIn, actor: CurrentActor, services: ServicesDep
) -> ConfigView:
    changes = body.model_dump(exclude_none=True, exclude={"note"})
    return await services.config.set_desired(actor, locker_id, changes, body.note)


@router.get(
    "/fleet/config/out-of-sync",
    response_model=list[ConfigView],
    summary="Lockers (in a site's subtree) whose reported configuration is not the desired one",
)
async def out_of_sync(
    actor: CurrentActor, services: ServicesDep, site_id: int | None = None
) -> list[ConfigView]:
    return await services.config.out_of_sync(actor, site_id)
