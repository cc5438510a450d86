"""The append-only audit log: every door opening, every remote-open request, every refusal."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import AuditEntry
from controller.services.context import Actor


def record(
    session: AsyncSession,
    *,
    at: datetime,
    locker_id: str,
    action: str,
    actor: Actor | None = None,
    actor_kind: str | None = None,
    compartment: str | None = None,
    cause: str | None = None,
    parcel_id: int | None = None,
    command_id: str | None = None,
    **detail: Any,
) -> AuditEntry:
    """Add one audit entry to the session (written with the surrounding transaction)."""
    entry = AuditEntry(
        at=at,
        locker_id=locker_id,
        compartment=compartment,
        action=action,
        cause=cause,
        actor_kind=actor_kind or (actor.kind if actor else "system"),
        actor_user_id=actor.user_id if actor and actor.user_id else None,
        parcel_id=parcel_id,
        command_id=command_id,
        detail=detail,
    )
    session.add(entry)
    return entry
