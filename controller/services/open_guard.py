"""The fleet's defence against mass opening: lockdown, per-minute limits, audited refusals.

Every path that queues a remote ``open_compartment`` calls :func:`guard_remote_open` in its
transaction, just before queuing the command. It refuses when

* an admin has switched on the fleet **lockdown** (a row in ``fleet_controls``, so every
  replica sees it at once): :class:`FleetLockedDown`;
* the opening would exceed this minute's limit for the requesting **user**, their
  **carrier** or the whole **fleet**: :class:`OpenLimitExceeded`.

The limits are counters in ``open_counters``, one row per scope and minute, taken with an
atomic ``UPDATE ... SET count = count + 1 WHERE count < limit RETURNING`` (on PostgreSQL the
row lock makes concurrent requests on any replica queue behind each other; SQLite has one
writer). A counter taken by a transaction that rolls back is given back with it, so only
openings actually queued count. Scopes are always taken in the same order (user, carrier,
fleet), so two requests cannot deadlock on them.

A refusal rolls the caller's transaction back, so it is audited afterwards in a transaction of
its own: callers wrap their transaction in :func:`audited_refusals`. A limit refusal also
raises (or repeats) the fleet's ``open_spike`` alarm. Keypad pickups never pass through here:
they happen inside the locker and keep working in a lockdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import Command as CommandRow
from controller.db.models import FleetControl, OpenCounter, Parcel
from controller.domain.alarms import FLEET, AlarmType
from controller.domain.errors import (
    FleetLockedDown,
    NotAllowed,
    OpenLimitExceeded,
    RemoteOpenRefused,
)
from controller.domain.states import (
    OPEN_COMMAND_STATES,
    CommandEvent,
    CommandState,
    IllegalTransition,
    next_command_state,
)
from controller.services import audit
from controller.services.alarms import AlarmBook
from controller.services.context import Actor, Context, Role
from protocol.messages import Action

LOCKDOWN = "lockdown"
COUNTER_RETENTION = timedelta(hours=1)


@dataclass(frozen=True)
class LockdownView:
    enabled: bool
    reason: str | None
    changed_at: datetime | None
    changed_by_user_id: int | None
    cancelled_commands: int = 0


def require(actor: Actor, *roles: Role) -> None:
    if actor.role not in roles:
        raise NotAllowed(f"this needs the role {' or '.join(r.value for r in roles)}")


def _scopes(actor: Actor, ctx: Context) -> list[tuple[str, int]]:
    s = ctx.settings
    scopes = [(f"user:{actor.user_id}", s.open_limit_per_user_per_min)]
    if actor.carrier_id is not None:
        scopes.append((f"carrier:{actor.carrier_id}", s.open_limit_per_carrier_per_min))
    scopes.append(("fleet", s.open_limit_fleet_per_min))
    return [(scope, limit) for scope, limit in scopes if limit > 0]


async def guard_remote_open(
    session: AsyncSession,
    ctx: Context,
    actor: Actor,
    *,
    locker_id: str,
    compartment: str,
    purpose: str,
    parcel_id: int | None,
) -> None:
    """Allow one remote opening, or raise :class:`FleetLockedDown` / :class:`OpenLimitExceeded`.

    Call it in the transaction that queues the command, right before queuing it.
    """
    request: dict[str, object] = {
        "locker_id": locker_id, "compartment": compartment, "purpose": purpose,
        "parcel_id": parcel_id,
    }  # fmt: skip
    # A shared lock: an admin switching the lockdown on waits for openings already past this
    # point to commit (and then withdraws them); openings arriving meanwhile wait for the switch.
    control = await session.get(FleetControl, LOCKDOWN, with_for_update={"read": True})
    if control is not None and control.enabled:
        raise FleetLockedDown(
            "the fleet is locked down: no remote door openings until an admin lifts it"
            + (f" ({control.reason})" if control.reason else ""),
            request=request,
        )
    now = ctx.clock.now()
    window = now.replace(second=0, microsecond=0)
    for scope, limit in _scopes(actor, ctx):
        if not await _take(session, ctx, scope, window, limit):
            retry = max(1, int((window + timedelta(minutes=1) - now).total_seconds()) + 1)
            raise OpenLimitExceeded(
                f"too many remote openings this minute for {scope} (limit {limit})",
                retry,
                request={**request, "scope": scope, "limit": limit},
            )


async def _take(
    session: AsyncSession, ctx: Context, scope: str, window: datetime, limit: int
) -> bool:
    """Count one opening in ``scope`` for the minute at ``window`` unless it is full."""
    dialect = postgresql if ctx.db.dialect == "postgresql" else sqlite
    await session.execute(
        dialect.insert(OpenCounter)
        .values(scope=scope, window_start=window, count=0)
        .on_conflict_do_nothing(index_elements=["scope", "window_start"])
    )
    taken = await session.execute(
        update(OpenCounter)
        .where(
            OpenCounter.scope == scope,
            OpenCounter.window_start == window,
            OpenCounter.count < limit,
        )
        .values(count=OpenCounter.count + 1)
        .returning(OpenCounter.count)
        .execution_options(synchronize_session=False)
    )
    return taken.first() is not None


@asynccontextmanager
async def audited_refusals(ctx: Context, actor: Actor) -> AsyncIterator[None]:
    """Audit every :class:`RemoteOpenRefused` raised inside (after its transaction is gone)."""
    try:
        yield
    except RemoteOpenRefused as refusal:
        await record_refusal(ctx, actor, refusal)
        raise


async def record_refusal(ctx: Context, actor: Actor, refusal: RemoteOpenRefused) -> None:
    """Write the refusal to the audit log; a limit refusal also raises ``open_spike``."""
    now = ctx.clock.now()
    detail: dict[str, Any] = dict(refusal.request)
    locker_id = str(detail.pop("locker_id", "") or "")
    compartment = detail.pop("compartment", None)
    parcel_id = detail.pop("parcel_id", None)
    async with ctx.db.sessions.begin() as session:
        audit.record(
            session, at=now, locker_id=locker_id, action="open_refused", actor=actor,
            compartment=str(compartment) if compartment else None, cause=refusal.code,
            parcel_id=parcel_id if isinstance(parcel_id, int) else None,
            message=refusal.message, **detail,
        )  # fmt: skip
        if isinstance(refusal, OpenLimitExceeded):
            await AlarmBook(session).raise_(
                FLEET, AlarmType.OPEN_SPIKE, at=now,
                detail={"last_scope": detail.get("scope"), "last_limit": detail.get("limit"),
                        "last_user_id": actor.user_id, "last_locker_id": locker_id},
            )  # fmt: skip


class OpenDefence:
    """The lockdown switch, as the API calls it (admins change it; staff may look)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def lockdown(self, actor: Actor) -> LockdownView:
        require(actor, Role.ADMIN, Role.TECHNICIAN, Role.OPERATOR)
        async with self.ctx.db.reader() as session:
            row = await session.get(FleetControl, LOCKDOWN)
        if row is None:
            return LockdownView(False, None, None, None)
        return LockdownView(row.enabled, row.reason, row.changed_at, row.changed_by_user_id)

    async def set_lockdown(
        self, actor: Actor, *, enabled: bool, reason: str | None
    ) -> LockdownView:
        """Switch the lockdown on (withdrawing every unanswered open command) or off."""
        require(actor, Role.ADMIN)
        now = self.ctx.clock.now()
        cancelled = 0
        async with self.ctx.db.sessions.begin() as session:
            row = await session.get(FleetControl, LOCKDOWN, with_for_update=True)
            if row is None:
                row = FleetControl(key=LOCKDOWN, enabled=False, changed_at=now)
                session.add(row)
            row.enabled, row.reason = enabled, (reason or None)
            row.changed_at, row.changed_by_user_id = now, actor.user_id
            if enabled:
                cancelled = await _withdraw_open_commands(session, actor, now)
            audit.record(
                session, at=now, locker_id=FLEET, actor=actor,
                action="lockdown_on" if enabled else "lockdown_off", cause="admin",
                reason=reason, cancelled_commands=cancelled,
            )  # fmt: skip
        return LockdownView(enabled, row.reason, now, actor.user_id, cancelled)

    async def prune_counters(self) -> int:
        """Delete counters of minutes long past; return how many."""
        before = self.ctx.clock.now() - COUNTER_RETENTION
        async with self.ctx.db.sessions.begin() as session:
            result = await session.execute(
                delete(OpenCounter)
                .where(OpenCounter.window_start < before)
                .execution_options(synchronize_session=False)
            )
        return int(getattr(result, "rowcount", 0) or 0)


async def _withdraw_open_commands(session: AsyncSession, actor: Actor, now: datetime) -> int:
    """Cancel every unanswered open command (a locker that already has one may still obey it:
    commands are signed before they leave, and cannot be recalled from the broker)."""
    rows = await session.scalars(
        select(CommandRow)
        .where(
            CommandRow.action == Action.OPEN_COMPARTMENT.value,
            CommandRow.state.in_([s.value for s in OPEN_COMMAND_STATES]),
        )
        .with_for_update()
    )
    cancelled = 0
    for row in rows:
        try:
            row.state = next_command_state(CommandState(row.state), CommandEvent.CANCELLED).value
        except IllegalTransition:
            continue
        row.completed_at = now
        cancelled += 1
        if row.parcel_id is not None:
            parcel = await session.get(Parcel, row.parcel_id, with_for_update=True)
            if parcel is not None and parcel.open_purpose == row.purpose:
                parcel.open_purpose = None
        audit.record(
            session, at=now, locker_id=row.locker_id, action="open_withdrawn", actor=actor,
            compartment=str(row.args.get("compartment", "")) or None, cause="lockdown",
            parcel_id=row.parcel_id, command_id=row.id,
        )  # fmt: skip
    return cancelled
