"""Commands to lockers and their states (pending, sent, succeeded, failed, refused, expired)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from controller.api.deps import CurrentActor, ServicesDep
from controller.services.views import CommandView

router = APIRouter(tags=["commands"])


@router.get("/commands/{command_id}", response_model=CommandView)
async def get_command(command_id: str, actor: CurrentActor, services: ServicesDep) -> CommandView:
    return await services.commands.get(actor, command_id)


@router.get(
    "/lockers/{locker_id}/commands",
    response_model=list[CommandView],
    summary="The newest commands sent to a locker (staff)",
)
async def locker_commands(
    locker_id: str, actor: CurrentActor, services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[CommandView]:  # fmt: skip
    return await services.commands.of_locker(actor, locker_id, limit)
