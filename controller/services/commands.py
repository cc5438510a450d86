"""Commands to lockers as a persistent RPC: stored, then signed, sent, retried, answered.

1. :func:`enqueue` stores the command in the caller's transaction, with the locker's next
   counter (an atomic ``UPDATE ... RETURNING`` on the locker row, so replicas never reuse one)
   and an expiry. Nothing is sent yet: if the transaction rolls back, no command exists.
2. The dispatcher (:meth:`CommandDispatcher.claim_due`) leases due commands for a few seconds
   (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so replicas share the work without sending one
   command twice at the same moment), signs them with the locker's key and hands them to the
   bridge. Retries go out with doubling intervals until the command expires; the payload of
   every attempt is the same bytes, and the locker executes a command id at most once.
3. The locker's result (:func:`apply_result`, from the ingest) settles it. A result that comes
   after expiry still counts: it says what really happened to the door.

While a locker is offline its commands are sent once (the broker queues them in the
locker's persistent session) and not retried; when it comes back they are due at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from controller.clock import to_ms
from controller.db.models import Command as CommandRow
from controller.db.models import Locker
from controller.domain.states import (
    OPEN_COMMAND_STATES,
    CommandEvent,
    CommandState,
    IllegalTransition,
    next_command_state,
)
from controller.keys import KeyRing
from controller.services.context import Context
from protocol.auth import sign_command
from protocol.codec import encode
from protocol.fields import from_wire, to_wire
from protocol.messages import (
    ACTION_OF,
    COMMAND_ARGS,
    Command,
    CommandArgs,
    CommandResult,
    RefusalReason,
    ResultStatus,
)
from protocol.topics import Channel

LEASE = timedelta(seconds=10)


async def enqueue(
    session: AsyncSession,
    ctx: Context,
    *,
    locker_id: str,
    args: CommandArgs,
    ttl: timedelta,
    purpose: str | None = None,
    parcel_id: int | None = None,
    user_id: int | None = None,
    locker: Locker | None = None,
    counter: int | None = None,
) -> CommandRow:
    """Store a new command for ``locker_id`` in the session's transaction and return it.

    Pass ``locker`` when its row is already locked in this session (``FOR UPDATE``): the
    counter is then taken from it without a round trip to the database. Pass ``counter``
    when the caller took one already (in the same ``UPDATE`` as something else).
    """
    if counter is None and locker is not None:
        locker.command_counter += 1
        counter = locker.command_counter
    if counter is None:
        counter = (
            await session.execute(
                update(Locker)
                .where(Locker.id == locker_id)
                .values(command_counter=Locker.command_counter + 1)
                .returning(Locker.command_counter)
            )
        ).scalar_one()
    now = ctx.clock.now()
    row = CommandRow(
        id=uuid.uuid4().hex,
        locker_id=locker_id,
        counter=counter,
        action=ACTION_OF[type(args)].value,
        args=to_wire(args),
        state=CommandState.PENDING.value,
        purpose=purpose,
        parcel_id=parcel_id,
        requested_by_user_id=user_id or None,
        created_at=now,
        expires_at=now + ttl,
        attempts=0,
        next_attempt_at=now,
    )
    session.add(row)
    at_commit: AtCommit | None = session.info.get(_AT_COMMIT)
    if at_commit is not None:
        at_commit.queued.append(row)
    return row


def protocol_command(row: CommandRow) -> Command:
    """Return the unsigned protocol command a stored row stands for."""
    args = from_wire(COMMAND_ARGS[row.action], row.args)
    return Command.of(
        row.locker_id, row.id, row.counter, to_ms(row.created_at), to_ms(row.expires_at), args
    )


def signed_payload(row: CommandRow, keys: KeyRing, key_generation: int) -> bytes:
    """Return the exact bytes to publish for a stored command (identical on every retry)."""
    key = keys.command_key(row.locker_id, key_generation)
    return encode(sign_command(protocol_command(row), key))


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A signed command ready to publish."""

    command_id: str
    locker_id: str
    topic: str
    payload: bytes


_AT_COMMIT = "lockerfleet.publish_at_commit"


@dataclass
class AtCommit:
    """What a transaction leaves to do once it has committed: the commands it stored as sent,
    to publish now (:func:`send_at_commit`), and every command it queued, to know whether the
    dispatcher has anything new to send."""

    outgoing: list[Outgoing] = field(default_factory=list)
    queued: list[CommandRow] = field(default_factory=list)
    resent: bool = False
    """Open commands were made due now (:func:`resend_now`)."""

    def merge(self, other: AtCommit) -> None:
        self.outgoing += other.outgoing
        self.queued += other.queued
        self.resent = self.resent or other.resent

    def dispatcher_needed(self) -> bool:
        """Whether the dispatcher has something new to send: a queued command still pending
        (not sent at the commit), or commands made due now. Waking it otherwise costs a
        claim transaction for nothing."""
        return self.resent or any(row.state == CommandState.PENDING.value for row in self.queued)


def publish_at_commit(session: AsyncSession) -> AtCommit:
    """Opt ``session`` in to :func:`send_at_commit`: the commands it marks go into the
    returned :class:`AtCommit`, which the caller hands to :func:`publish_after_commit` once
    its transaction has committed. Sessions not opted in leave every command to the
    dispatcher.
    """
    at_commit: AtCommit = session.info.setdefault(_AT_COMMIT, AtCommit())
    return at_commit


def send_at_commit(ctx: Context, session: AsyncSession, row: CommandRow, locker: Locker) -> None:
    """Take a new command's first send out of the dispatcher's hands: when the session is
    opted in (:func:`publish_at_commit`) and this replica is connected to the broker, the row
    is stored as sent once (its retry scheduled) and its signed message queued for the
    caller to publish right after the commit. That saves the dispatcher's claim and record
    transactions and its wake-up on the way to an opening door or a locker's code cache.

    If the publish is then lost (the connection drops, the process dies before it), the
    command goes out again at its first retry, as any unanswered send does. Otherwise the
    dispatcher sends it as usual.
    """
    at_commit: AtCommit | None = session.info.get(_AT_COMMIT)
    publisher = ctx.publisher
    if at_commit is None or publisher is None or not publisher.ready():
        return
    if not _transition(row, CommandEvent.SENT):
        return
    _count_send(row, ctx.clock.now(), ctx)
    at_commit.outgoing.append(_outgoing(ctx, row, locker))


def publish_after_commit(ctx: Context, at_commit: AtCommit) -> None:
    """Publish what :func:`send_at_commit` prepared (call after the commit); wake the
    dispatcher if the transaction queued anything else."""
    if at_commit.outgoing and ctx.publisher is not None:
        ctx.publisher.publish_commands([(o.topic, o.payload) for o in at_commit.outgoing])
    if at_commit.dispatcher_needed():
        ctx.wake_dispatcher()


def _outgoing(ctx: Context, row: CommandRow, locker: Locker) -> Outgoing:
    topic = ctx.topics.locker(row.locker_id, Channel.COMMAND)
    return Outgoing(
        row.id, row.locker_id, topic, signed_payload(row, ctx.keys, locker.key_generation)
    )


def _count_send(row: CommandRow, now: datetime, ctx: Context) -> None:
    """One more attempt made now; the next after the doubling delay, never past expiry."""
    s = ctx.settings
    row.attempts += 1
    row.last_sent_at = now
    delay = retry_delay(row.attempts, s.command_retry_initial_s, s.command_retry_max_s)
    row.next_attempt_at = min(now + delay, row.expires_at)


def _transition(row: CommandRow, event: CommandEvent) -> bool:
    try:
        row.state = next_command_state(CommandState(row.state), event).value
    except IllegalTransition:
        return False
    return True


def retry_delay(attempts: int, initial_s: float, max_s: float) -> timedelta:
    """Return how long to wait after the ``attempts``-th send before the next one."""
    return timedelta(seconds=min(initial_s * 2 ** max(attempts - 1, 0), max_s))


class CommandDispatcher:
    """Claims due commands, signs them, and records what was sent. One per replica."""

    def __init__(self, ctx: Context, owner: str) -> None:
        self.ctx = ctx
        self.owner = owner

    async def claim_due(self, limit: int = 200) -> list[Outgoing]:
        """Lease due commands, give up expired ones, and return the rest signed."""
        ctx = self.ctx
        now = ctx.clock.now()
        async with ctx.db.sessions.begin() as session:
            rows = (
                await session.scalars(
                    select(CommandRow)
                    .where(
                        CommandRow.state.in_([s.value for s in OPEN_COMMAND_STATES]),
                        CommandRow.next_attempt_at <= now,
                        or_(CommandRow.lease_until.is_(None), CommandRow.lease_until < now),
                    )
                    .order_by(CommandRow.next_attempt_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return []
            lockers = {
                locker.id: locker
                for locker in await session.scalars(
                    select(Locker).where(Locker.id.in_({r.locker_id for r in rows}))
                )
            }
            out: list[Outgoing] = []
            for row in rows:
                locker = lockers[row.locker_id]
                if row.expires_at <= now:
                    _transition(row, CommandEvent.EXPIRED)
                    row.completed_at = now
                    continue
                if not locker.online and row.attempts > 0:
                    # Queued in the locker's broker session already; resent when it returns.
                    row.next_attempt_at = row.expires_at
                    continue
                row.lease_owner, row.lease_until = self.owner, now + LEASE
                out.append(_outgoing(ctx, row, locker))
        return out

    async def record_sent(self, command_ids: list[str]) -> None:
        """Mark commands as sent and schedule their next attempt."""
        if not command_ids:
            return
        ctx = self.ctx
        now = ctx.clock.now()
        async with ctx.db.sessions.begin() as session:
            # Locked up front in id order, as a batch locks the commands its results answer:
            # two transactions taking the same rows in different orders could deadlock.
            for row in await session.scalars(
                select(CommandRow)
                .where(CommandRow.id.in_(command_ids))
                .order_by(CommandRow.id)
                .with_for_update()
            ):
                if not _transition(row, CommandEvent.SENT):
                    continue  # answered while we were publishing
                row.lease_owner = row.lease_until = None
                _count_send(row, now, ctx)


def result_event(result: CommandResult) -> CommandEvent | None:
    """Return the lifecycle event of a result, or None when it settles nothing.

    ``replayed`` means the locker has seen this counter already: the original result is on
    its way (or stored), so this one must not overwrite it.
    """
    if result.status is ResultStatus.OK:
        return CommandEvent.RESULT_OK
    if result.status is ResultStatus.FAILED:
        return CommandEvent.RESULT_FAILED
    if result.reason is RefusalReason.REPLAYED:
        return None
    return CommandEvent.RESULT_REFUSED


def apply_result(
    row: CommandRow, result: CommandResult, wire: dict[str, Any], at: datetime
) -> bool:
    """Settle ``row`` with ``result``; return whether it changed the command's state."""
    event = result_event(result)
    if event is None or not _transition(row, event):
        return False
    row.result_status = result.status.value
    row.result_outcome = result.outcome.value if result.outcome else None
    row.result_reason = result.reason.value if result.reason else None
    row.result = wire
    row.completed_at = at
    row.lease_owner = row.lease_until = None
    return True


async def in_flight_open(session: AsyncSession, parcel_id: int, purpose: str) -> CommandRow | None:
    """Return the unanswered opening of a parcel for ``purpose``, if one is under way.

    A repeated request (a courier's app retrying, a double tap) gets that command back instead
    of a second door opening: remote openings are idempotent while one is in flight.
    """
    return (
        await session.scalars(
            select(CommandRow)
            .where(
                CommandRow.parcel_id == parcel_id,
                CommandRow.purpose == purpose,
                CommandRow.action == "open_compartment",
                CommandRow.state.in_([s.value for s in OPEN_COMMAND_STATES]),
            )
            .order_by(CommandRow.created_at.desc())
        )
    ).first()


async def cancel_open(session: AsyncSession, parcel_id: int, at: datetime) -> None:
    """Withdraw the unanswered commands of a parcel (e.g. when the parcel is cancelled)."""
    for row in await session.scalars(
        select(CommandRow).where(
            CommandRow.parcel_id == parcel_id,
            CommandRow.state.in_([s.value for s in OPEN_COMMAND_STATES]),
        )
    ):
        if _transition(row, CommandEvent.CANCELLED):
            row.completed_at = at


async def resend_now(session: AsyncSession, locker_ids: list[str], at: datetime) -> None:
    """Make every open command of these lockers due now (they have just come back online)."""
    result = await session.execute(
        update(CommandRow)
        .where(
            CommandRow.locker_id.in_(locker_ids),
            CommandRow.state.in_([s.value for s in OPEN_COMMAND_STATES]),
            CommandRow.expires_at > at,
        )
        .values(next_attempt_at=at, lease_until=None, lease_owner=None)
    )
    at_commit: AtCommit | None = session.info.get(_AT_COMMIT)
    if at_commit is not None and isinstance(result, CursorResult) and result.rowcount > 0:
        at_commit.resent = True
