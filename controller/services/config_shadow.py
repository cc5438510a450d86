"""Each locker's configuration as a device shadow: desired by staff, reported by the locker.

Desired configurations are rows of ``locker_configs``, one per version and never changed; the
locker row points at the newest (``config_version``) and at the version the locker last said
it has in force (``config_reported``). The rules (fields, ranges, versions, sync states) are
in :mod:`controller.domain.config`.

* :meth:`ConfigShadow.set_desired` merges a partial change onto the desired configuration,
  checks it against the protocol, stores it as a new version, withdraws any older
  ``set_config`` still under way, and queues a signed ``set_config`` in the same transaction:
  the command dispatcher sends and retries it like any other command (sent once while the
  locker is offline, queued in its broker session, resent as soon as it is back).
* :func:`catch_up` runs on every birth (from the ingest, in its transaction): a locker whose
  reported version is behind the desired one, with no ``set_config`` of that version under way
  (it may have expired while the locker was away), gets a new one.
* :func:`note_applied` takes a ``config_applied`` event; the command's result also carries the
  version in force (:mod:`~controller.services.effects`).

All state is in the database and every write locks the locker row, so replicas can take
requests and births for the same locker at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import Command as CommandRow
from controller.db.models import Locker, LockerConfig
from controller.domain import config as rules
from controller.domain.errors import NotFound
from controller.domain.states import (
    OPEN_COMMAND_STATES,
    CommandEvent,
    CommandState,
    IllegalTransition,
    next_command_state,
)
from controller.services import audit, commands, sites
from controller.services.context import Actor, Context, Role
from controller.services.lockers import STAFF, require
from controller.services.parcel_flow import lock_fleet_locker
from controller.services.views import CommandView
from protocol.messages import Action

CONFIG_TTL = timedelta(minutes=30)
"""How long one ``set_config`` is retried; a locker away longer gets a new one on its birth."""


@dataclass(frozen=True)
class ConfigView:
    """A locker's shadow: what is desired, what it reports, and whether they agree."""

    locker_id: str
    desired_version: int
    desired: dict[str, int]
    """The desired settings (the protocol's defaults while nothing is desired, version 0)."""
    reported_version: int | None
    reported: dict[str, int] | None
    """The settings of the reported version, when known (version 0: the defaults)."""
    sync: rules.SyncState
    online: bool
    last_command: CommandView | None
    """The newest ``set_config`` sent to the locker: under way, or why it failed."""


async def _settings(
    session: AsyncSession, locker_id: str, version: int | None
) -> dict[str, int] | None:
    if version is None:
        return None
    if version == 0:
        return dict(rules.FACTORY)
    row = await session.get(LockerConfig, (locker_id, version))
    return dict(row.settings) if row is not None else None


async def _view(session: AsyncSession, locker: Locker) -> ConfigView:
    last = (
        await session.scalars(
            select(CommandRow)
            .where(CommandRow.locker_id == locker.id, CommandRow.action == Action.SET_CONFIG.value)
            .order_by(CommandRow.counter.desc())
            .limit(1)
        )
    ).first()
    desired = await _settings(session, locker.id, locker.config_version)
    return ConfigView(
        locker_id=locker.id,
        desired_version=locker.config_version,
        desired=desired if desired is not None else dict(rules.FACTORY),
        reported_version=locker.config_reported,
        reported=await _settings(session, locker.id, locker.config_reported),
        sync=rules.sync_state(locker.config_version, locker.config_reported),
        online=locker.online,
        last_command=CommandView.of(last) if last is not None else None,
    )


async def _open_set_configs(session: AsyncSession, locker_id: str) -> list[CommandRow]:
    return list(
        await session.scalars(
            select(CommandRow).where(
                CommandRow.locker_id == locker_id,
                CommandRow.action == Action.SET_CONFIG.value,
                CommandRow.state.in_([s.value for s in OPEN_COMMAND_STATES]),
            )
        )
    )


async def _send(session: AsyncSession, ctx: Context, locker: Locker, user_id: int | None) -> str:
    """Queue the desired configuration for the locker; return the command id."""
    row = await session.get(LockerConfig, (locker.id, locker.config_version))
    if row is None:  # the pointer and the history are written together: a bug if reached
        raise RuntimeError(f"locker {locker.id} lacks configuration {locker.config_version}")
    command = await commands.enqueue(
        session, ctx, locker_id=locker.id, args=rules.command(row.version, row.settings),
        ttl=CONFIG_TTL, purpose="config", user_id=user_id,
    )  # fmt: skip
    return command.id


async def catch_up(session: AsyncSession, ctx: Context, locker: Locker) -> bool:
    """Queue a ``set_config`` if the locker is behind and none of that version is under way.

    Called with the locker row loaded (and locked) in the caller's transaction, after its
    reported version was updated; returns whether a command was queued.
    """
    if locker.status == "decommissioned":
        return False
    state = rules.sync_state(locker.config_version, locker.config_reported)
    if state is not rules.SyncState.PENDING:
        return False
    for row in await _open_set_configs(session, locker.id):
        if row.args.get("config_version") == locker.config_version:
            return False
    await _send(session, ctx, locker, None)
    return True


def note_applied(locker: Locker, boot_id: int, version: int) -> None:
    """Take a ``config_applied`` event. Within one boot the version in force only grows (the
    firmware never rolls back), so a late event cannot lower it; an event from an earlier boot
    than the newest birth is old news and changes nothing."""
    if boot_id > locker.boot_id:
        locker.config_reported = version
    elif boot_id == locker.boot_id:
        locker.config_reported = max(locker.config_reported or 0, version)


class ConfigShadow:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def get(self, actor: Actor, locker_id: str) -> ConfigView:
        """The locker's shadow (staff). Raises :class:`NotFound`."""
        require(actor, *STAFF)
        async with self.ctx.db.reader() as session:
            locker = await session.get(Locker, locker_id)
            if locker is None:
                raise NotFound(f"no locker {locker_id!r}")
            return await _view(session, locker)

    async def set_desired(
        self, actor: Actor, locker_id: str, changes: Mapping[str, object], note: str | None = None
    ) -> ConfigView:
        """Change some settings of the desired configuration (admins, technicians).

        A change that leaves every setting as it is creates no version (but re-sends the
        desired one to a locker still behind with no ``set_config`` under way). Raises
        :class:`~controller.domain.config.InvalidConfig` (nothing stored, nothing sent),
        :class:`NotFound`, :class:`Conflict` (decommissioned).
        """
        require(actor, Role.ADMIN, Role.TECHNICIAN)
        async with self.ctx.db.sessions.begin() as session:
            locker = await lock_fleet_locker(session, locker_id)
            current = await _settings(session, locker_id, locker.config_version)
            base = current if current is not None else dict(rules.FACTORY)
            merged = rules.merge(base, changes)
            if merged == base and locker.config_version > 0:
                # Nothing new; but a locker still behind with no set_config under way (it
                # expired unanswered) gets one again: asking twice is how staff re-send.
                queued = await catch_up(session, self.ctx, locker)
            else:
                await self._new_version(session, actor, locker, base, merged, note)
                queued = True
            await session.flush()
            view = await _view(session, locker)
        if queued:
            self.ctx.wake_dispatcher()
        return view

    async def _new_version(
        self, session: AsyncSession, actor: Actor, locker: Locker, base: dict[str, int],
        merged: dict[str, int], note: str | None,
    ) -> None:  # fmt: skip
        """Store ``merged`` as the next version, withdraw older commands, queue the new one."""
        now = self.ctx.clock.now()
        version = rules.next_version(locker.config_version, locker.config_reported)
        session.add(
            LockerConfig(
                locker_id=locker.id, version=version, settings=merged, created_at=now,
                created_by_user_id=actor.user_id or None, note=note,
            )
        )  # fmt: skip
        locker.config_version = version
        for row in await _open_set_configs(session, locker.id):
            _withdraw(row, now)
        await session.flush()
        command_id = await _send(session, self.ctx, locker, actor.user_id)
        audit.record(
            session, at=now, locker_id=locker.id, action="config_desired", actor=actor,
            command_id=command_id, version=version,
            changes={k: merged[k] for k in _changed(base, merged)}, note=note,
        )  # fmt: skip

    async def out_of_sync(self, actor: Actor, site_id: int | None = None) -> list[ConfigView]:
        """Lockers (in a site's subtree) whose reported configuration is not the desired one:
        pending or ahead, decommissioned ones left out (staff). Raises :class:`NotFound`."""
        require(actor, *STAFF)
        async with self.ctx.db.reader() as session:
            query = (
                select(Locker)
                .where(Locker.status != "decommissioned", Locker.config_version > 0)
                .order_by(Locker.id)
            )
            if site_id is not None:
                query = query.where(Locker.site_id.in_(await sites.subtree(session, site_id)))
            views = []
            for locker in await session.scalars(query):
                if locker.config_reported != locker.config_version:
                    views.append(await _view(session, locker))
            return views


def _changed(before: Mapping[str, int], after: Mapping[str, int]) -> list[str]:
    return [name for name in rules.FIELDS if before.get(name) != after.get(name)]


def _withdraw(row: CommandRow, at: datetime) -> None:
    """Withdraw a ``set_config`` a newer desired configuration replaces."""
    try:
        row.state = next_command_state(CommandState(row.state), CommandEvent.CANCELLED).value
    except IllegalTransition:
        return
    row.completed_at = at
