"""Pickup and drop-off codes: issuing them, keeping lockers' code caches in step, checking them.

A code exists in clear only in the SMS queued for its recipient; the database keeps the keyed
hash the locker also holds (``protocol.codes.code_hash`` under the locker's code key), unique
among the locker's active codes by a partial unique index.

Every change to a locker's set of active codes bumps its target cache version and queues a
one-page *delta* sync from the previous version. When a locker reports another version (in its
birth, or by refusing a delta with ``cache_version_mismatch``) it gets a paged *full* sync of
the current set; a full sync it had partly received is resumed with only the missing pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from controller.clock import to_ms
from controller.db.models import CodeAttempt, Compartment, Locker, Parcel, PickupCode
from controller.domain.codes import new_code
from controller.domain.errors import LockedOut, WrongCode
from controller.services import commands
from controller.services.context import Context
from protocol.codes import code_hash, delta_sync, full_sync_pages
from protocol.messages import CodeEntry, CodeStaging

MAX_DRAWS = 20
DELTA_CHUNK = 40
"""Code entries per delta sync: 40 entries of ~150 bytes stay far below 16 KiB."""


async def _bump_cache_version(session: AsyncSession, locker_id: str) -> tuple[int, int]:
    """Move the locker's code cache on a version and take a command counter for the sync
    that carries the change: one statement for both. Returns (version, counter)."""
    version, counter = (
        await session.execute(
            update(Locker)
            .where(Locker.id == locker_id)
            .values(
                code_cache_version=Locker.code_cache_version + 1,
                command_counter=Locker.command_counter + 1,
            )
            .returning(Locker.code_cache_version, Locker.command_counter)
        )
    ).one()
    return version, counter


def _entry(code: PickupCode, parcel_ref: str, compartment: str) -> CodeEntry:
    return CodeEntry(code.code_hash, compartment, parcel_ref, to_ms(code.expires_at))


async def issue(
    session: AsyncSession,
    ctx: Context,
    *,
    parcel: Parcel,
    locker: Locker,
    compartment_label: str,
    purpose: str,
    expires_at: datetime,
) -> str:
    """Create an active code for ``parcel``, queue the delta sync, and return the code."""
    code_key = ctx.keys.code_key(locker.id, locker.code_key_generation)
    dialect = postgresql if ctx.db.dialect == "postgresql" else sqlite
    for _ in range(MAX_DRAWS):
        code = new_code()
        hashed = code_hash(code_key, locker.id, code)
        # No savepoint: the partial unique index on the locker's active hashes turns a code
        # already active there into no row inserted, and we draw again.
        inserted = await session.scalar(
            dialect.insert(PickupCode)
            .values(
                parcel_id=parcel.id, locker_id=locker.id, code_hash=hashed, purpose=purpose,
                active=True, expires_at=expires_at, created_at=ctx.clock.now(),
            )
            .on_conflict_do_nothing()
            .returning(PickupCode.id)
        )  # fmt: skip
        if inserted is None:
            continue  # the same code is active on this locker already: draw again
        version, counter = await _bump_cache_version(session, locker.id)
        entry = CodeEntry(hashed, compartment_label, parcel.ref, to_ms(expires_at))
        sync = delta_sync(version - 1, version, [entry], [])
        row = await commands.enqueue(
            session, ctx, locker_id=locker.id, args=sync, ttl=_sync_ttl(ctx),
            parcel_id=parcel.id, counter=counter,
        )  # fmt: skip
        commands.send_at_commit(ctx, session, row, locker)
        return code
    raise RuntimeError(f"could not draw a free code for locker {locker.id}")


def _sync_ttl(ctx: Context) -> timedelta:
    return timedelta(seconds=ctx.settings.sync_command_ttl_s)


async def retire(
    session: AsyncSession, ctx: Context, *, parcel_id: int, locker_id: str, at: datetime
) -> None:
    """Deactivate the parcel's active codes and queue their removal from the locker cache."""
    rows = (
        await session.scalars(
            select(PickupCode).where(PickupCode.parcel_id == parcel_id, PickupCode.active)
        )
    ).all()
    if not rows:
        return
    for row in rows:
        row.active = False
        row.used_at = row.used_at or at
    await session.flush()
    version, counter = await _bump_cache_version(session, locker_id)
    sync = delta_sync(version - 1, version, [], [r.code_hash for r in rows])
    await commands.enqueue(
        session, ctx, locker_id=locker_id, args=sync, ttl=_sync_ttl(ctx), counter=counter
    )


async def extend(
    session: AsyncSession, ctx: Context, *, locker_id: str, parcels: list[tuple[Parcel, str]]
) -> None:
    """Re-send the active codes of ``parcels`` (with their compartment labels) with expiry
    moved to each parcel's current deadline."""
    by_id = {p.id: (p, label) for p, label in parcels}
    rows = (
        await session.scalars(
            select(PickupCode).where(PickupCode.parcel_id.in_(by_id), PickupCode.active)
        )
    ).all()
    entries = []
    for row in rows:
        parcel, label = by_id[row.parcel_id]
        if parcel.deadline_at is not None:
            row.expires_at = parcel.deadline_at
        entries.append(_entry(row, parcel.ref, label))
    # One delta per chunk keeps every command well inside the 16 KiB message limit.
    for start in range(0, len(entries), DELTA_CHUNK):
        version, counter = await _bump_cache_version(session, locker_id)
        sync = delta_sync(version - 1, version, entries[start : start + DELTA_CHUNK], [])
        await commands.enqueue(
            session, ctx, locker_id=locker_id, args=sync, ttl=_sync_ttl(ctx), counter=counter
        )


@dataclass(frozen=True)
class SyncWanted:
    """A locker that reported its code cache (in a birth or a sync result) and may need a
    full sync. ``locker`` must be locked in the session (``SELECT ... FOR UPDATE``)."""

    locker: Locker
    reported_version: int | None
    staging: CodeStaging | None = None


async def full_sync(
    session: AsyncSession,
    ctx: Context,
    locker: Locker,
    *,
    reported_version: int | None,
    staging: CodeStaging | None,
) -> int:
    """Queue the pages of a full sync that ``locker`` is missing; return how many were queued.

    Nothing is queued when the locker already reports the target version.
    """
    return await full_syncs(session, ctx, [SyncWanted(locker, reported_version, staging)])


async def full_syncs(session: AsyncSession, ctx: Context, wanted: list[SyncWanted]) -> int:
    """:func:`full_sync` for many lockers at once, in two queries whatever their number (a
    reconnect storm brings thousands of births). Returns how many pages were queued."""
    todo = [w for w in wanted if not (w.reported_version == w.locker.code_cache_version
                                      and w.staging is None)]  # fmt: skip
    if not todo:
        return 0
    for w in todo:
        if w.locker.code_cache_version == 0:
            # Nothing was ever issued here, yet the locker holds another version: start a new
            # version so that the (empty) full sync has a version to move to.
            w.locker.code_cache_version = 1
    ids = sorted({w.locker.id for w in todo})
    rows = (
        await session.execute(
            select(PickupCode, Parcel.ref)
            .join(Parcel, Parcel.id == PickupCode.parcel_id)
            .where(PickupCode.locker_id.in_(ids), PickupCode.active)
            .order_by(PickupCode.id)
        )
    ).all()
    labels = await _labels_of_parcels(session, [code.parcel_id for code, _ in rows])
    entries: dict[str, list[CodeEntry]] = {locker_id: [] for locker_id in ids}
    for code, ref in rows:
        entries[code.locker_id].append(_entry(code, ref, labels[code.parcel_id]))
    queued = 0
    for w in todo:
        target = w.locker.code_cache_version
        pages = full_sync_pages(entries[w.locker.id], target)
        have: set[int] = set()
        staging = w.staging
        if staging is not None and staging.version == target and staging.pages == len(pages):
            have = set(staging.have)
        for page in pages:
            if page.page in have:
                continue
            row = await commands.enqueue(
                session, ctx, locker_id=w.locker.id, args=page, ttl=_sync_ttl(ctx),
                locker=w.locker,
            )  # fmt: skip
            commands.send_at_commit(ctx, session, row, w.locker)
            queued += 1
    return queued


async def _labels_of_parcels(session: AsyncSession, parcel_ids: list[int]) -> dict[int, str]:
    if not parcel_ids:
        return {}
    rows = await session.execute(
        select(Parcel.id, Compartment.label)
        .join(Compartment, Compartment.id == Parcel.compartment_id)
        .where(Parcel.id.in_(parcel_ids))
    )
    return {pid: label for pid, label in rows.all()}


async def check_api_code(
    ctx: Context, *, client_key: str, locker: Locker, parcel_id: int, code: str
) -> None:
    """Check a code given through the API (an agent collecting with a villager's code).

    Returns if the code is an active, unexpired code of the parcel. Raises
    :class:`LockedOut` while the client is locked out and :class:`WrongCode` (with attempts
    left) for a wrong code. Each wrong code counts toward a lockout with backoff, per API
    client. Runs in transactions of its own, before the caller's: the count sticks although
    the caller fails, and it lives in the database, so it holds across replicas.
    """
    now = ctx.clock.now()
    hashed = code_hash(ctx.keys.code_key(locker.id, locker.code_key_generation), locker.id, code)
    async with ctx.db.sessions.begin() as session:
        attempt = await session.get(CodeAttempt, ("api", client_key))
        if attempt is not None and attempt.locked_until is not None and attempt.locked_until > now:
            wait = int((attempt.locked_until - now).total_seconds()) + 1
            raise LockedOut(f"too many wrong codes; try again in {wait} s", retry_after_s=wait)
        row = (
            await session.scalars(
                select(PickupCode).where(
                    PickupCode.parcel_id == parcel_id,
                    PickupCode.code_hash == hashed,
                    PickupCode.active,
                    PickupCode.expires_at > now,
                )
            )
        ).first()
    failures = await _count_attempt(ctx, client_key, failed=row is None)
    if row is not None:
        return
    policy = ctx.lockout_policy
    lockout = policy.lockout_after(failures)
    if lockout is not None:
        raise LockedOut(
            "too many wrong codes; locked out", retry_after_s=int(lockout.total_seconds())
        )
    raise WrongCode(
        "the code does not match this parcel", attempts_left=policy.attempts_left(failures)
    )


async def _count_attempt(ctx: Context, client_key: str, *, failed: bool) -> int:
    """Record one attempt in its own transaction; return the consecutive failures now."""
    now = ctx.clock.now()
    async with ctx.db.sessions.begin() as own:
        attempt = await own.get(CodeAttempt, ("api", client_key), with_for_update=True)
        if attempt is None:
            attempt = CodeAttempt(scope="api", key=client_key, failures=0)
            own.add(attempt)
        if not failed:
            attempt.failures, attempt.locked_until = 0, None
            return 0
        attempt.failures += 1
        attempt.last_failure_at = now
        lockout = ctx.lockout_policy.lockout_after(attempt.failures)
        attempt.locked_until = now + lockout if lockout is not None else None
        return attempt.failures
