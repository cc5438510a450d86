"""Fleet health for operators: alarms to list, acknowledge and clear; health per township and
county; and the watchdog that turns a long silence into a ``locker_offline`` alarm.

The watchdog (:meth:`HealthService.watch_presence`) runs in every replica's background loop.
It takes the locker rows it acts on with ``FOR UPDATE`` and re-checks them, and the partial
unique index keeps one open alarm per locker, so replicas running it at once do no harm.

Sites are a small tree (a county has hundreds of nodes, a province tens of thousands); it is
read whole and walked here rather than with recursive SQL, which keeps one code path for
SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import Alarm, Locker, Site
from controller.domain.alarms import (
    OPEN_ALARM_STATES,
    AlarmEvent,
    AlarmState,
    AlarmType,
    Severity,
)
from controller.domain.errors import InvalidRequest, NotFound
from controller.services import audit
from controller.services.alarms import AlarmBook, settle
from controller.services.context import Actor, Context, Role
from controller.services.open_guard import require

STAFF = (Role.ADMIN, Role.TECHNICIAN, Role.OPERATOR)


@dataclass(frozen=True)
class AlarmView:
    id: int
    locker_id: str
    compartment: str | None
    site_id: int | None
    type: str
    severity: str
    state: str
    count: int
    parcel_id: int | None
    detail: dict[str, Any]
    first_seen_at: datetime
    last_seen_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by_user_id: int | None
    cleared_at: datetime | None
    cleared_by_user_id: int | None
    clear_reason: str | None

    @classmethod
    def of(cls, row: Alarm, site_id: int | None) -> AlarmView:
        return cls(
            row.id, row.locker_id, row.compartment or None, site_id, row.type, row.severity,
            row.state, row.count, row.parcel_id, row.detail, row.first_seen_at, row.last_seen_at,
            row.acknowledged_at, row.acknowledged_by_user_id, row.cleared_at,
            row.cleared_by_user_id, row.clear_reason,
        )  # fmt: skip


@dataclass(frozen=True)
class AlarmFilter:
    site_id: int | None = None
    """The site and everything below it."""
    locker_id: str | None = None
    severity: Severity | None = None
    type: AlarmType | None = None
    state: AlarmState | None = None
    open_only: bool = False
    limit: int = 200


@dataclass
class SiteHealth:
    site_id: int
    kind: str
    name: str
    lockers: int = 0
    online: int = 0
    offline: int = 0
    open_alarms: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in Severity})


@dataclass(frozen=True)
class _Tree:
    parent: dict[int, int | None]
    rows: dict[int, Site]

    def subtree(self, root: int) -> set[int]:
        children: dict[int, list[int]] = {}
        for site, parent in self.parent.items():
            if parent is not None:
                children.setdefault(parent, []).append(site)
        found, todo = set(), [root]
        while todo:
            site = todo.pop()
            found.add(site)
            todo.extend(children.get(site, []))
        return found

    def ancestors(self, site: int) -> list[int]:
        """The site and every site above it, nearest first."""
        out: list[int] = []
        current: int | None = site
        while current is not None and current not in out:
            out.append(current)
            current = self.parent.get(current)
        return out


async def _tree(session: AsyncSession) -> _Tree:
    rows = {s.id: s for s in await session.scalars(select(Site))}
    return _Tree({i: s.parent_id for i, s in rows.items()}, rows)


class HealthService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def watch_presence(self) -> int:
        """Raise ``locker_offline`` for lockers silent beyond the grace; return how many."""
        now = self.ctx.clock.now()
        since = now - timedelta(seconds=self.ctx.settings.offline_alarm_grace_s)
        alarmed = select(Alarm.locker_id).where(
            Alarm.type == AlarmType.LOCKER_OFFLINE.value,
            Alarm.state.in_(list(OPEN_ALARM_STATES)),
        )
        async with self.ctx.db.reader() as session:
            due = list(
                await session.scalars(
                    select(Locker.id)
                    .where(
                        Locker.status == "active",
                        Locker.online.is_(False),
                        Locker.offline_since <= since,
                        Locker.id.not_in(alarmed),
                    )
                    .order_by(Locker.id)
                    .limit(500)
                )
            )
        if not due:
            return 0
        raised = 0
        async with self.ctx.db.sessions.begin() as session:
            lockers = await session.scalars(
                select(Locker).where(Locker.id.in_(due)).order_by(Locker.id).with_for_update()
            )
            book = AlarmBook(session)
            await book.preload(due)
            for locker in lockers:
                if locker.online or locker.offline_since is None or locker.offline_since > since:
                    continue
                if await book.find(locker.id, AlarmType.LOCKER_OFFLINE) is not None:
                    continue
                await book.raise_(
                    locker.id, AlarmType.LOCKER_OFFLINE, at=now,
                    detail={"offline_since": locker.offline_since.isoformat()},
                )  # fmt: skip
                raised += 1
        return raised

    async def alarms(self, actor: Actor, query: AlarmFilter) -> list[AlarmView]:
        """Alarms, newest first, filtered. Raises :class:`NotFound` for an unknown site."""
        require(actor, *STAFF)
        stmt = (
            select(Alarm, Locker.site_id)
            .outerjoin(Locker, Locker.id == Alarm.locker_id)
            .order_by(Alarm.last_seen_at.desc(), Alarm.id.desc())
            .limit(max(1, min(query.limit, 1000)))
        )
        async with self.ctx.db.reader() as session:
            if query.site_id is not None:
                tree = await _tree(session)
                if query.site_id not in tree.rows:
                    raise NotFound(f"no site {query.site_id}")
                stmt = stmt.where(Locker.site_id.in_(tree.subtree(query.site_id)))
            if query.locker_id is not None:
                stmt = stmt.where(Alarm.locker_id == query.locker_id)
            if query.severity is not None:
                stmt = stmt.where(Alarm.severity == query.severity.value)
            if query.type is not None:
                stmt = stmt.where(Alarm.type == query.type.value)
            if query.state is not None:
                stmt = stmt.where(Alarm.state == query.state.value)
            if query.open_only:
                stmt = stmt.where(Alarm.state.in_(list(OPEN_ALARM_STATES)))
            rows = (await session.execute(stmt)).all()
            return [AlarmView.of(alarm, site_id) for alarm, site_id in rows]

    async def acknowledge(self, actor: Actor, alarm_id: int) -> AlarmView:
        """Acknowledge an active alarm. Raises ``IllegalTransition`` (409) otherwise."""
        return await self._settle(actor, alarm_id, AlarmEvent.ACKNOWLEDGE, None)

    async def clear(self, actor: Actor, alarm_id: int, note: str | None) -> AlarmView:
        """Clear an open alarm by hand (security alarms end only this way)."""
        if note is not None and len(note) > 200:
            raise InvalidRequest("a note has at most 200 characters")
        return await self._settle(actor, alarm_id, AlarmEvent.CLEAR, note or "cleared by hand")

    async def _settle(
        self, actor: Actor, alarm_id: int, event: AlarmEvent, note: str | None
    ) -> AlarmView:
        require(actor, *STAFF)
        now = self.ctx.clock.now()
        async with self.ctx.db.sessions.begin() as session:
            alarm = await session.get(Alarm, alarm_id, with_for_update=True)
            if alarm is None:
                raise NotFound(f"no alarm {alarm_id}")
            settle(alarm, event, at=now, user_id=actor.user_id, reason=note)
            audit.record(
                session, at=now, locker_id=alarm.locker_id, action=f"alarm_{event.value}",
                actor=actor, compartment=alarm.compartment or None, cause=alarm.type,
                alarm_id=alarm.id, note=note,
            )  # fmt: skip
            site_id = await session.scalar(
                select(Locker.site_id).where(Locker.id == alarm.locker_id)
            )
            return AlarmView.of(alarm, site_id)

    async def fleet_health(self, actor: Actor) -> list[SiteHealth]:
        """Lockers online/offline and open alarms by severity, per county and township."""
        require(actor, *STAFF)
        async with self.ctx.db.reader() as session:
            tree = await _tree(session)
            lockers = (
                await session.execute(
                    select(Locker.id, Locker.site_id, Locker.online).where(
                        Locker.status != "decommissioned"
                    )
                )
            ).all()
            alarm_counts = (
                await session.execute(
                    select(Alarm.locker_id, Alarm.severity, func.count(Alarm.id))
                    .where(Alarm.state.in_(list(OPEN_ALARM_STATES)))
                    .group_by(Alarm.locker_id, Alarm.severity)
                )
            ).all()
        summaries = {
            site.id: SiteHealth(site.id, site.kind, site.name)
            for site in tree.rows.values()
            if site.kind in ("county", "township")
        }
        site_of: dict[str, int] = {}
        for locker_id, site_id, online in lockers:
            site_of[locker_id] = site_id
            for above in tree.ancestors(site_id):
                if above in summaries:
                    summary = summaries[above]
                    summary.lockers += 1
                    summary.online += 1 if online else 0
                    summary.offline += 0 if online else 1
        per_locker: Counter[tuple[int, str]] = Counter()
        for locker_id, severity, n in alarm_counts:
            site = site_of.get(locker_id)
            for above in tree.ancestors(site) if site is not None else []:
                if above in summaries:
                    per_locker[above, severity] += n
        for (site, severity), n in per_locker.items():
            summaries[site].open_alarms[severity] = n
        order = {"county": 0, "township": 1}
        return sorted(summaries.values(), key=lambda s: (order.get(s.kind, 2), s.name, s.site_id))
