"""The notification outbox: SMS texts queued in the same transaction as the change they tell
about, and sent afterwards by whichever replica leases them.

A pickup text carries the code in clear; once the sender has taken it, the stored body is
replaced by a copy with the code masked, so the code does not outlive its delivery in the
database. Senders are pluggable (:class:`SmsSender`); the default writes to the log.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import Notification
from controller.domain.codes import masked
from controller.services.context import Context

log = logging.getLogger("lockerfleet.sms")

CHINA = timezone(timedelta(hours=8), "CST")
"""China Standard Time: no daylight saving, so a fixed offset is exact."""


class SmsSender(Protocol):
    async def send(self, to: str, body: str) -> None:
        """Deliver one text; raise on failure (it will be retried)."""
        ...


class LogSender:
    """Writes each text to the ``lockerfleet.sms`` logger (the default; fine for the demo)."""

    async def send(self, to: str, body: str) -> None:
        log.info("SMS to %s: %s", to, body)


class FileSender:
    """Appends ``phone<TAB>text`` lines to a file (the demo and tests read codes from it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def send(self, to: str, body: str) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            out.write(f"{to}\t{body}\n")


def _local(moment: datetime) -> str:
    return moment.astimezone(CHINA).strftime("%m月%d日%H:%M")


def pickup_text(
    *, carrier: str, place: str, compartment: str, code: str, deadline: datetime
) -> str:
    return (
        f"【乡村快递】您的{carrier}包裹已存入{place}{compartment}号格口，"
        f"取件码{code}，请于{_local(deadline)}前凭码取件。"
    )


def dropoff_text(*, place: str, compartment: str, code: str, deadline: datetime) -> str:
    return (
        f"【乡村快递】您预约的寄件已分配{place}{compartment}号格口，"
        f"投件码{code}，请于{_local(deadline)}前投递。"
    )


_CODE_IN_TEXT = re.compile(r"(取件码|投件码)([0-9]{6})")


def redacted(body: str) -> str:
    """Return ``body`` with every pickup or drop-off code in it masked."""
    return _CODE_IN_TEXT.sub(lambda m: m.group(1) + masked(m.group(2)), body)


def queue(
    session: AsyncSession, ctx: Context, *, to: str, body: str, parcel_id: int | None
) -> Notification:
    """Add a text to the outbox (sent after the surrounding transaction commits)."""
    now = ctx.clock.now()
    row = Notification(
        channel="sms",
        to=to,
        body=body,
        parcel_id=parcel_id,
        state="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(row)
    return row


class NotificationDispatcher:
    """Sends due texts. Safe to run on every replica: rows are leased before sending."""

    MAX_ATTEMPTS = 8

    def __init__(self, ctx: Context, sender: SmsSender) -> None:
        self.ctx = ctx
        self.sender = sender

    async def run_once(self, limit: int = 100) -> int:
        """Send what is due; return how many were sent."""
        ctx = self.ctx
        now = ctx.clock.now()
        async with ctx.db.sessions.begin() as session:
            rows = (
                await session.scalars(
                    select(Notification)
                    .where(
                        Notification.state == "pending",
                        Notification.next_attempt_at <= now,
                        or_(Notification.lease_until.is_(None), Notification.lease_until < now),
                    )
                    .order_by(Notification.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                row.lease_until = now + timedelta(seconds=30)
            batch = [(row.id, row.to, row.body) for row in rows]
        outcomes: dict[int, str | None] = {}
        for row_id, to, body in batch:
            error: str | None = None
            try:
                await self.sender.send(to, body)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
            outcomes[row_id] = error
        await self._settle(outcomes)
        return sum(error is None for error in outcomes.values())

    async def _settle(self, outcomes: dict[int, str | None]) -> None:
        """Record what happened to each text, all in one transaction (a burst of deposits
        brings a burst of texts: one transaction each made the ingest queue behind them).
        A replica that dies before this leaves the rows leased; they are sent again once
        the lease runs out (at least once, as before)."""
        if not outcomes:
            return
        now = self.ctx.clock.now()
        async with self.ctx.db.sessions.begin() as session:
            rows = await session.scalars(
                select(Notification).where(Notification.id.in_(sorted(outcomes)))
            )
            for row in rows:
                self._settle_row(row, outcomes[row.id], now)

    def _settle_row(self, row: Notification, error: str | None, now: datetime) -> None:
        row.attempts += 1
        row.lease_until = None
        if error is None:
            row.state, row.sent_at = "sent", now
            row.body, row.last_error = redacted(row.body), None
        elif row.attempts >= self.MAX_ATTEMPTS:
            row.state, row.last_error = "failed", error
        else:
            row.last_error = error
            row.next_attempt_at = now + timedelta(seconds=min(2**row.attempts, 600))
