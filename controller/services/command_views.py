"""Reading commands: every state of a command is visible to those it concerns.

Staff (admin, technician, operator) see every command; a courier sees the commands of its
carrier's parcels; anyone sees the commands they asked for themselves.
"""

from __future__ import annotations

from sqlalchemy import select

from controller.db.models import Command, Parcel
from controller.domain.errors import NotFound
from controller.services.context import Actor, Context, Role
from controller.services.lockers import STAFF, require
from controller.services.views import CommandView


class CommandQueries:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def get(self, actor: Actor, command_id: str) -> CommandView:
        async with self.ctx.db.reader() as session:
            row = await session.get(Command, command_id)
            if row is None or not await self._visible(actor, row):
                raise NotFound(f"no command {command_id}")
            return CommandView.of(row)

    async def _visible(self, actor: Actor, row: Command) -> bool:
        if actor.role in STAFF or row.requested_by_user_id == actor.user_id:
            return True
        if actor.role is Role.COURIER and row.parcel_id is not None:
            async with self.ctx.db.reader() as session:
                carrier = await session.scalar(
                    select(Parcel.carrier_id).where(Parcel.id == row.parcel_id)
                )
            return carrier is not None and carrier == actor.carrier_id
        return False

    async def of_locker(self, actor: Actor, locker_id: str, limit: int) -> list[CommandView]:
        require(actor, *STAFF)
        async with self.ctx.db.reader() as session:
            rows = await session.scalars(
                select(Command)
                .where(Command.locker_id == locker_id)
                .order_by(Command.counter.desc())
                .limit(limit)
            )
            return [CommandView.of(r) for r in rows]
