"""Ingest of locker messages in batches: decode, dedupe in the database, apply, acknowledge.

For one batch (up to ~1,000 messages gathered for a few milliseconds by the bridge):

1. every message is decoded; a bad topic, an unknown or decommissioned locker, a payload
   that breaks the protocol or names another locker than its topic is *rejected* with a clear
   reason and changes nothing. A rejected message whose envelope can still be read (locker,
   boot, seq) is stored as such, raw, and acknowledged, so a buggy locker does not resend it
   forever and nothing it said is lost;
2. in one transaction the batch's locker rows are locked (in id order, so replicas cannot
   deadlock), births, events and results are inserted with ``ON CONFLICT DO NOTHING`` on
   ``(locker_id, boot_id, seq)`` — the database, not this process, decides what is new —
   and only the new ones are applied, per locker in sequence order;
3. the stream bookkeeping on the locker row finds gaps (a rebirth is requested if one outlives
   the locker's retransmissions);
4. after the commit, the caller publishes a signed acknowledgement per locker and boot covering
   every sequence number in the batch (new and duplicate alike): only then may the locker
   forget them. A controller that dies before committing acknowledges nothing, and the locker
   sends the messages again — to whichever replica is alive.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import Command as CommandRow
from controller.db.models import Compartment, DeviceMessage, Locker, Parcel
from controller.domain.states import HOLDING_STATES
from controller.services import alarms, commands, locker_state
from controller.services.context import Context
from controller.services.effects import HOLDER_EVENTS, BatchState, Effects
from protocol.auth import encode_signed_ack
from protocol.codec import message_from_object, parse_json
from protocol.errors import RemoteProtocolError
from protocol.messages import (
    DEVICE_MESSAGES,
    Ack,
    Birth,
    CommandResult,
    Event,
    Presence,
    RequestRebirth,
    Telemetry,
)
from protocol.messages import (
    DeviceMessage as Message,
)
from protocol.sequence import to_ranges
from protocol.topics import CHANNEL_OF_TYPE, Channel

log = logging.getLogger("lockerfleet.ingest")

GAP_GRACE = timedelta(seconds=60)
"""How long a missing sequence number may stay missing before a rebirth is requested."""

REBIRTH_TTL = timedelta(minutes=5)
ACK_RANGES = 250
"""Ranges per ack: 250 of the longest (16-digit) numbers stay well inside the 16 KiB payload."""
SEQUENCED_CHANNELS = (Channel.BIRTH, Channel.EVENT, Channel.RESULT)


@dataclass(frozen=True, slots=True)
class Inbound:
    """One MQTT message as the bridge received it."""

    topic: str
    payload: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Rejection:
    topic: str
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message to publish once the batch has committed."""

    topic: str
    payload: bytes
    qos: int = 1


@dataclass
class AckBook:
    """Sequence numbers stored and not yet acknowledged, by locker and boot, with the key
    generation to sign their acks with. Batches can be merged into one book so that a locker
    gets one ack for several batches when they come back to back."""

    seqs: dict[tuple[str, int], set[int]] = field(default_factory=dict)
    generations: dict[str, int] = field(default_factory=dict)

    def add(self, locker_id: str, boot_id: int, seq: int, generation: int) -> None:
        self.seqs.setdefault((locker_id, boot_id), set()).add(seq)
        self.generations[locker_id] = generation

    def merge(self, other: AckBook) -> None:
        for key, seqs in other.seqs.items():
            self.seqs.setdefault(key, set()).update(seqs)
        self.generations.update(other.generations)

    def __len__(self) -> int:
        return len(self.seqs)

    def sign(self, ctx: Context) -> list[Outbound]:
        """One signed ack per locker and boot (more if its ranges would not fit one)."""
        now_ms = int(ctx.clock.now().timestamp() * 1000)
        out = []
        for (locker_id, boot_id), seqs in sorted(self.seqs.items()):
            key = ctx.keys.command_key(locker_id, self.generations[locker_id])
            topic = ctx.topics.locker(locker_id, Channel.ACK)
            ranges = to_ranges(seqs)
            for start in range(0, len(ranges), ACK_RANGES):
                ack = Ack(locker_id, boot_id, ranges[start : start + ACK_RANGES], now_ms)
                out.append(Outbound(topic, encode_signed_ack(ack, key)))
        return out


@dataclass
class BatchReport:
    stored: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    deferred: list[Inbound] = field(default_factory=list)
    """Messages of lockers another replica was busy with (see ``Ingest.handle``)."""
    deferred_lockers: set[str] = field(default_factory=set)
    to_ack: AckBook = field(default_factory=AckBook)
    """Everything the batch covered, new and duplicate alike, committed."""
    acks: list[Outbound] = field(default_factory=list)
    """``to_ack`` signed, unless the caller asked to sign later (the bridge coalesces)."""
    at_commit: commands.AtCommit = field(default_factory=commands.AtCommit)
    """Commands the batch stored as sent, to publish now it has committed
    (:func:`~controller.services.commands.send_at_commit`), and those it queued."""

    def merge(self, other: BatchReport) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.to_ack.merge(other.to_ack)
        self.deferred += other.deferred
        self.deferred_lockers |= other.deferred_lockers
        self.acks += other.acks
        self.at_commit.merge(other.at_commit)


@dataclass(frozen=True, slots=True)
class _Sequenced:
    locker_id: str
    boot_id: int
    seq: int
    kind: str
    ts_ms: int
    wire: dict[str, Any]
    message: Message | None  # None for a rejected message kept raw
    received_at: datetime


@dataclass
class _Parsed:
    sequenced: list[_Sequenced] = field(default_factory=list)
    unsequenced: list[tuple[Message, datetime]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def _parse(ctx: Context, batch: list[Inbound]) -> _Parsed:
    out = _Parsed()
    for item in batch:
        try:
            locker_id, channel = ctx.topics.parse(item.topic)
            if channel not in (*SEQUENCED_CHANNELS, Channel.PRESENCE, Channel.TELEMETRY):
                raise RemoteProtocolError(
                    f"lockers do not publish on {channel}", code="invalid_topic"
                )
            obj = parse_json(item.payload)
        except RemoteProtocolError as exc:
            out.rejected.append(Rejection(item.topic, exc.code, str(exc)))
            continue
        try:
            message = message_from_object(obj, DEVICE_MESSAGES)
            if CHANNEL_OF_TYPE[message.TYPE] is not channel:
                raise RemoteProtocolError(
                    f"a {message.TYPE} does not belong on {channel}", code="topic_mismatch"
                )
            if message.locker_id != locker_id:
                raise RemoteProtocolError(
                    f"payload names locker {message.locker_id!r}, topic {locker_id!r}",
                    code="topic_mismatch",
                )
        except RemoteProtocolError as exc:
            out.rejected.append(Rejection(item.topic, exc.code, str(exc)))
            # Keep (and acknowledge) a message whose content is invalid but whose envelope is
            # readable; never one that is merely misplaced, whose number must stay free for the
            # same message sent where it belongs.
            raw = (
                None
                if exc.code == "topic_mismatch"
                else _readable_envelope(obj, locker_id, channel)
            )
            if raw is not None:
                boot_id, seq, ts = raw
                out.sequenced.append(
                    _Sequenced(
                        locker_id,
                        boot_id,
                        seq,
                        f"rejected:{exc.code}",
                        ts,
                        {"error": str(exc), "raw": obj},
                        None,
                        item.received_at,
                    )
                )
            continue
        if isinstance(message, Birth | Event | CommandResult):
            kind = message.event.value if isinstance(message, Event) else message.TYPE
            out.sequenced.append(
                _Sequenced(
                    locker_id,
                    message.boot_id,
                    message.seq,
                    kind,
                    message.ts,
                    obj,
                    message,
                    item.received_at,
                )
            )
        else:
            out.unsequenced.append((message, item.received_at))
    return out


def _readable_envelope(
    obj: dict[str, Any], locker_id: str, channel: Channel
) -> tuple[int, int, int] | None:
    """(boot_id, seq, ts) of a rejected message on a sequenced channel, if they are sane."""
    if channel not in SEQUENCED_CHANNELS or obj.get("locker_id") != locker_id:
        return None
    values = obj.get("boot_id"), obj.get("seq"), obj.get("ts", 0)
    sane = [v for v in values if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**53]
    if len(sane) != 3 or sane[0] < 1 or sane[1] < 1:
        return None
    return sane[0], sane[1], sane[2]


def _compartment_named(message: Message | None, state: BatchState) -> str | None:
    """The compartment an event or a command result is about, if any."""
    if isinstance(message, Event):
        label = getattr(message.data, "compartment", None)
        return label if isinstance(label, str) else None
    if isinstance(message, CommandResult):
        row = state.commands.get(message.command_id or "")
        label = row.args.get("compartment") if row is not None else None
        return label if isinstance(label, str) else None
    return None


class Ingest:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def handle(
        self, batch: list[Inbound], *, sign_acks: bool = True, wait_for: set[str] | None = None
    ) -> BatchReport:
        """Store and apply one batch; return what to acknowledge and what was rejected.

        With ``sign_acks`` false the report carries what to acknowledge (``to_ack``) but no
        signed acks yet: the caller signs them, perhaps merged with later batches'.

        By default the batch waits for every locker row it needs. Given ``wait_for`` (the
        bridge), it waits only for those lockers and skips the rows another replica holds
        locked (PostgreSQL's ``SKIP LOCKED``): their messages come back untouched in
        ``deferred`` for the caller to hand in again, with their lockers in ``wait_for``. Two
        replicas sharing a subscription then store disjoint lockers side by side instead of
        queueing on each other's row locks, and a deferred message is deferred only once.
        """
        parsed = _parse(self.ctx, batch)
        report = BatchReport(rejected=list(parsed.rejected))
        locker_ids = sorted(
            {s.locker_id for s in parsed.sequenced} | {m.locker_id for m, _ in parsed.unsequenced}
        )
        if not locker_ids:
            return report
        async with self.ctx.db.sessions.begin() as session:
            report.at_commit = commands.publish_at_commit(session)
            if wait_for is None:
                lockers = await self._lock_lockers(session, locker_ids)
                busy: set[str] = set()
            else:
                lockers = await self._lock_lockers(
                    session, [i for i in locker_ids if i in wait_for]
                )
                lockers |= await self._lock_lockers(
                    session, [i for i in locker_ids if i not in wait_for], skip_locked=True
                )
                busy = await self._registered(session, set(locker_ids) - set(lockers))
            if busy:
                report.deferred = [i for i in batch if self._locker_of(i) in busy]
                report.deferred_lockers = busy
            unknown = set(locker_ids) - set(lockers) - busy
            for locker_id in unknown:
                report.rejected.append(
                    Rejection(
                        f"{self.ctx.topics.root}/locker/{locker_id}",
                        "unknown_locker",
                        f"locker {locker_id!r} is not registered (or decommissioned)",
                    )
                )
            sequenced = [s for s in parsed.sequenced if s.locker_id in lockers]
            new_keys = await self._insert(session, sequenced)
            report.stored = len(new_keys)
            report.duplicates = len({(s.locker_id, s.boot_id, s.seq) for s in sequenced}) - len(
                new_keys
            )
            state = BatchState(lockers)
            effects = Effects(session, self.ctx, state)
            await effects.alarms.preload(lockers)
            later = state.catch_up
            for message, received_at in parsed.unsequenced:
                locker = lockers.get(message.locker_id)
                if locker is None:
                    continue
                if isinstance(message, Presence):
                    offline_since = None if locker.online else locker.offline_since
                    await locker_state.apply_presence(
                        session, self.ctx, locker, message, received_at, later
                    )
                    await self._presence_alarms(effects, locker, offline_since, received_at)
                elif isinstance(message, Telemetry):
                    locker_state.apply_telemetry(locker, message, received_at)
                    await self._telemetry_alarms(effects.alarms, message, received_at)
            fresh = sorted(
                (s for s in sequenced if (s.locker_id, s.boot_id, s.seq) in new_keys),
                key=lambda s: (s.locker_id, s.boot_id, s.seq),
            )
            await self._load(session, state, fresh)
            self._count_streams(lockers, fresh)
            for item in fresh:
                await self._apply(session, effects, state, item)
            await locker_state.catch_up(session, self.ctx, later)
            await self._request_rebirths(session, state)
            for s in sequenced:
                report.to_ack.add(
                    s.locker_id, s.boot_id, s.seq, lockers[s.locker_id].key_generation
                )
        if sign_acks:
            report.acks = report.to_ack.sign(self.ctx)
        return report

    async def _lock_lockers(
        self, session: AsyncSession, ids: list[str], *, skip_locked: bool = False
    ) -> dict[str, Locker]:
        if not ids:
            return {}
        rows = await session.scalars(
            select(Locker)
            .where(Locker.id.in_(ids), Locker.status != "decommissioned")
            .order_by(Locker.id)
            .with_for_update(skip_locked=skip_locked)
        )
        return {row.id: row for row in rows}

    async def _registered(self, session: AsyncSession, ids: set[str]) -> set[str]:
        """Which of ``ids`` are registered lockers (not decommissioned), without locking."""
        if not ids:
            return set()
        rows = await session.scalars(
            select(Locker.id).where(Locker.id.in_(ids), Locker.status != "decommissioned")
        )
        return set(rows)

    def _locker_of(self, item: Inbound) -> str | None:
        try:
            return self.ctx.topics.parse(item.topic)[0]
        except RemoteProtocolError:
            return None

    async def _insert(
        self, session: AsyncSession, items: list[_Sequenced]
    ) -> set[tuple[str, int, int]]:
        """Insert the batch's sequenced messages; return the keys that were new."""
        if not items:
            return set()
        rows, seen = [], set()
        for s in items:
            key = (s.locker_id, s.boot_id, s.seq)
            if key in seen:
                continue
            seen.add(key)
            rows.append(
                {
                    "locker_id": s.locker_id,
                    "boot_id": s.boot_id,
                    "seq": s.seq,
                    "kind": s.kind,
                    "ts": locker_state.locker_time(s.ts_ms),
                    "received_at": s.received_at,
                    "payload": s.wire,
                }
            )
        dialect = postgresql if self.ctx.db.dialect == "postgresql" else sqlite
        table = DeviceMessage.__table__  # Core, not the ORM's bulk path: a third of the cost
        stmt = (
            dialect.insert(table)
            .on_conflict_do_nothing(index_elements=["locker_id", "boot_id", "seq"])
            .returning(table.c.locker_id, table.c.boot_id, table.c.seq)
        )
        result = await session.execute(stmt, rows)
        return {(r[0], r[1], r[2]) for r in result.all()}

    async def _load(
        self, session: AsyncSession, state: BatchState, items: list[_Sequenced]
    ) -> None:
        """Load, in a few queries, the commands and compartments the batch's new messages touch,
        and the parcels holding the compartments of its door events (locked).

        Only the compartments named by an event or by the command a result answers are loaded,
        and every compartment of a locker that sent a birth (the birth reconciles them all).
        """
        command_ids = {
            s.message.command_id
            for s in items
            if isinstance(s.message, CommandResult) and s.message.command_id
        }
        command_ids |= {
            getattr(s.message.data, "command_id", None) or ""
            for s in items
            if isinstance(s.message, Event)
        }
        command_ids.discard("")
        if command_ids:
            for row in await session.scalars(
                select(CommandRow)
                .where(CommandRow.id.in_(command_ids))
                .order_by(CommandRow.id)  # one lock order everywhere: no deadlocks
                .with_for_update()
            ):
                state.commands[row.id] = row
        whole = {s.locker_id for s in items if isinstance(s.message, Birth)}
        named = {
            (s.locker_id, label)
            for s in items
            if s.locker_id not in whole and (label := _compartment_named(s.message, state))
        }
        conditions = []
        if whole:
            conditions.append(Compartment.locker_id.in_(sorted(whole)))
        if named:
            conditions.append(tuple_(Compartment.locker_id, Compartment.label).in_(sorted(named)))
        if conditions:
            for c in await session.scalars(select(Compartment).where(or_(*conditions))):
                state.compartments_of(c.locker_id)[c.label] = c
        doors = {
            (s.locker_id, s.message.data.compartment)
            for s in items
            if isinstance(s.message, Event) and isinstance(s.message.data, HOLDER_EVENTS)
        }
        ids = [
            found.id
            for locker_id, label in sorted(doors)
            if (found := state.compartments_of(locker_id).get(label)) is not None
        ]
        if ids:
            state.holding.update(dict.fromkeys(ids))
            for parcel in await session.scalars(
                select(Parcel)
                .where(
                    Parcel.compartment_id.in_(ids),
                    Parcel.state.in_([s.value for s in HOLDING_STATES]),
                )
                .order_by(Parcel.id)
                .with_for_update()
            ):
                if parcel.compartment_id is not None:
                    state.holding[parcel.compartment_id] = parcel

    def _count_streams(self, lockers: dict[str, Locker], fresh: list[_Sequenced]) -> None:
        per_boot: dict[tuple[str, int], list[int]] = defaultdict(list)
        for s in fresh:
            per_boot[s.locker_id, s.boot_id].append(s.seq)
        for (locker_id, boot_id), seqs in per_boot.items():
            locker = lockers[locker_id]
            if boot_id > locker.stream_boot_id:
                locker.stream_boot_id, locker.stream_high, locker.stream_count = boot_id, 0, 0
                locker.stream_skipped = locker.stream_reported_high = 0
                locker.gap_since = locker.rebirth_requested_at = None
            if boot_id == locker.stream_boot_id:
                locker.stream_count += len(seqs)
                locker.stream_high = max(locker.stream_high, *seqs)

    async def _apply(
        self, session: AsyncSession, effects: Effects, state: BatchState, item: _Sequenced
    ) -> None:
        message, at = item.message, item.received_at
        locker = state.lockers[item.locker_id]
        if message is None:
            log.warning(
                "stored rejected message %s/%d/%d: %s",
                item.locker_id,
                item.boot_id,
                item.seq,
                item.wire.get("error"),
            )
        elif isinstance(message, Birth):
            mine = state.compartments_of(locker.id)
            offline_since = None if locker.online else locker.offline_since
            await locker_state.apply_birth(
                session, self.ctx, locker, message, mine, at, state.catch_up
            )
            await self._presence_alarms(effects, locker, offline_since, at)
            await alarms.check_clock(
                effects.alarms, locker.id, locker_state.locker_time(message.ts), at,
                self.ctx.settings,
            )  # fmt: skip
            await alarms.check_firmware(
                effects.alarms, locker.id, message.firmware, at, self.ctx.settings
            )
        elif isinstance(message, Event):
            await effects.apply_event(message, at)
        elif isinstance(message, CommandResult):
            await effects.apply_result(message, item.wire, at)

    async def _presence_alarms(
        self, effects: Effects, locker: Locker, offline_since: datetime | None, at: datetime
    ) -> None:
        """A locker that was offline and is online now: its offline alarm ends."""
        if locker.online:
            await alarms.came_back(effects.alarms, locker.id, offline_since, at)

    async def _telemetry_alarms(
        self, book: alarms.AlarmBook, telemetry: Telemetry, at: datetime
    ) -> None:
        locker_ts = locker_state.locker_time(telemetry.ts)
        await alarms.check_clock(book, telemetry.locker_id, locker_ts, at, self.ctx.settings)
        await alarms.power(
            book, telemetry.locker_id, telemetry.power, telemetry.battery_pct, at,
            self.ctx.settings.low_battery_pct,
        )  # fmt: skip
        await alarms.temperature_evidence(
            book, telemetry.locker_id,
            ((r.compartment, r.deci_celsius) for r in telemetry.temperatures), locker_ts,
        )  # fmt: skip

    async def _request_rebirths(self, session: AsyncSession, state: BatchState) -> None:
        now = self.ctx.clock.now()
        for locker in state.lockers.values():
            top = max(locker.stream_high, locker.stream_reported_high)
            if locker.stream_count + locker.stream_skipped >= top:
                locker.gap_since = None
                continue
            locker.gap_since = locker.gap_since or now
            if now - locker.gap_since >= GAP_GRACE:
                state.rebirth.add(locker.id)
        for locker_id in sorted(state.rebirth):
            locker = state.lockers[locker_id]
            if locker.rebirth_requested_at and now - locker.rebirth_requested_at < REBIRTH_TTL:
                continue
            locker.rebirth_requested_at = now
            await commands.enqueue(
                session,
                self.ctx,
                locker_id=locker_id,
                args=RequestRebirth(),
                ttl=REBIRTH_TTL,
                purpose="rebirth",
            )
