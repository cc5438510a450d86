"""Provisioning a locker with a one-time token, and decommissioning it for good.

A technician asks for a provisioning token for a registered locker (:meth:`issue_token`). The
token is shown once; the database keeps only its keyed hash
(:meth:`~controller.keys.KeyRing.token_hash`), so a database dump yields no usable token. The
locker — or the technician's bench tool on its behalf — trades it once for the locker's
credentials (:meth:`redeem`): broker user and password, command key, code key. Redeeming is an
atomic ``UPDATE ... WHERE used_at IS NULL AND expires_at > now``, so two replicas handed the same
token at the same moment give the credentials out once. An expired, used or unknown token (or
one presented for another locker, or for a decommissioned locker) is refused with the same
message, so a guesser learns nothing; the audit log records every refusal with its reason. The
token arrives over HTTP (the bench tool) or over MQTT (:mod:`controller.mqtt.provisioning`).

Decommissioning (:meth:`decommission`) is final: the ingest drops the locker's messages, its
unused tokens die, no token can be issued for it again, and ``broker-config`` leaves it out of
the broker's password file.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import AuditEntry, Locker, ProvisioningToken
from controller.domain.errors import Conflict, InvalidRequest, NotAllowed, NotFound
from controller.services import audit
from controller.services.context import Actor, Context, Role
from controller.services.lockers import credentials
from controller.services.parcel_flow import lock_fleet_locker
from controller.services.views import Credentials

DEFAULT_TTL = timedelta(minutes=30)
MAX_TTL = timedelta(hours=24)
TOKEN_PREFIX = "lfp_"  # noqa: S105 - a prefix, not a secret


@dataclass(frozen=True)
class IssuedProvisioningToken:
    locker_id: str
    token: str
    """Shown once; give it to the locker over a trusted channel."""
    expires_at: datetime


class InvalidProvisioningToken(NotAllowed):
    code = "invalid_provisioning_token"


class RepeatedProvisioningRequest(Conflict):
    """The request that used the token arrived again (a redelivery): answer nothing."""

    code = "repeated_provisioning_request"


class _Refusal(Exception):
    def __init__(self, why: str) -> None:
        self.why = why


async def _provisioned_by(session: AsyncSession, locker_id: str, request_id: str) -> bool:
    """Whether the locker's latest provisioning answered ``request_id``."""
    detail = await session.scalar(
        select(AuditEntry.detail)
        .where(AuditEntry.locker_id == locker_id, AuditEntry.action == "provisioned")
        .order_by(AuditEntry.id.desc())
        .limit(1)
    )
    return isinstance(detail, dict) and detail.get("request_id") == request_id


def _require(actor: Actor, *roles: Role) -> None:
    if actor.role not in roles:
        raise NotAllowed(f"this needs the role {' or '.join(r.value for r in roles)}")


class ProvisioningService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def issue_token(
        self, actor: Actor, locker_id: str, ttl: timedelta = DEFAULT_TTL
    ) -> IssuedProvisioningToken:
        """Return a new single-use token for ``locker_id``.

        Raises :class:`NotFound`, :class:`Conflict` (decommissioned), :class:`InvalidRequest`.
        """
        _require(actor, Role.ADMIN, Role.TECHNICIAN)
        if not timedelta(0) < ttl <= MAX_TTL:
            raise InvalidRequest(f"a provisioning token lives between 1 s and {MAX_TTL}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self.ctx.clock.now()
        async with self.ctx.db.sessions.begin() as session:
            await lock_fleet_locker(session, locker_id)
            session.add(
                ProvisioningToken(
                    locker_id=locker_id, token_hash=self.ctx.keys.token_hash(token),
                    created_at=now, created_by_user_id=actor.user_id, expires_at=now + ttl,
                )
            )  # fmt: skip
            audit.record(
                session, at=now, locker_id=locker_id, action="provisioning_token_issued",
                actor=actor, expires_at=(now + ttl).isoformat(),
            )  # fmt: skip
        return IssuedProvisioningToken(locker_id, token, now + ttl)

    async def redeem(
        self,
        token: str,
        *,
        locker_id: str | None = None,
        request_id: str | None = None,
        via: str = "http",
    ) -> Credentials:
        """Trade a token for its locker's credentials, once.

        With ``locker_id`` the token must have been issued for that locker (a token presented
        for another locker is refused and stays unused). ``request_id`` (over MQTT) is recorded
        with the provisioning, so that the same request delivered twice is recognised. ``via``
        says how it came (``http``, ``mqtt``) for the audit log.

        Raises :class:`InvalidProvisioningToken` for an unknown, used or expired token, one
        for another locker, or a decommissioned locker (each refusal is audited, with the
        reason, which the caller never learns); :class:`RepeatedProvisioningRequest` when
        ``request_id`` is the very request that used the token (a redelivery, not a reuse).
        """
        refused = InvalidProvisioningToken("the provisioning token is unknown, used or expired")
        now = self.ctx.clock.now()
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            await self._refused(locker_id, "malformed", via, now)
            raise refused
        token_hash = self.ctx.keys.token_hash(token)
        conditions = [
            ProvisioningToken.token_hash == token_hash,
            ProvisioningToken.used_at.is_(None),
            ProvisioningToken.expires_at > now,
        ]
        if locker_id is not None:
            conditions.append(ProvisioningToken.locker_id == locker_id)
        try:
            async with self.ctx.db.sessions.begin() as session:
                used = await session.execute(
                    update(ProvisioningToken)
                    .where(*conditions)
                    .values(used_at=now)
                    .returning(ProvisioningToken.locker_id)
                    .execution_options(synchronize_session=False)
                )
                owner = used.scalar_one_or_none()
                if owner is not None:
                    locker = await session.get(Locker, owner, with_for_update=True)
                    if locker is None or locker.status == "decommissioned":
                        raise _Refusal("decommissioned")  # rolls the use back
                    audit.record(
                        session, at=now, locker_id=owner, action="provisioned",
                        actor_kind="locker", key_generation=locker.key_generation, via=via,
                        request_id=request_id,
                    )  # fmt: skip
                    return credentials(self.ctx, locker)
        except _Refusal as refusal:
            why, owner = refusal.why, locker_id
        else:
            why, owner = await self._why(token_hash, locker_id, request_id)
        await self._refused(locker_id or owner, why, via, now, owner)
        raise refused

    async def _why(
        self, token_hash: str, locker_id: str | None, request_id: str | None
    ) -> tuple[str, str | None]:
        """Why a token that the redeeming UPDATE did not match is refused (for the audit),
        and the locker it was issued for (``None`` for an unknown token)."""
        async with self.ctx.db.reader() as session:
            row = await session.scalar(
                select(ProvisioningToken).where(ProvisioningToken.token_hash == token_hash)
            )
            if row is None:
                return "unknown", None
            if locker_id is not None and row.locker_id != locker_id:
                return "other_locker", row.locker_id
            if row.used_at is not None:
                if request_id is not None and await _provisioned_by(
                    session, row.locker_id, request_id
                ):
                    raise RepeatedProvisioningRequest(f"request {request_id} was answered")
                return "used", row.locker_id
            locker = await session.get(Locker, row.locker_id)
            if locker is None or locker.status == "decommissioned":
                return "decommissioned", row.locker_id
            return "expired", row.locker_id

    async def _refused(
        self, locker_id: str | None, why: str, via: str, now: datetime, owner: str | None = None
    ) -> None:
        """Audit a refusal under the locker that presented the token (or the token's own
        locker, when the caller did not say); ``token_locker`` when the two differ."""
        extra: dict[str, Any] = {"token_locker": owner} if owner and owner != locker_id else {}
        async with self.ctx.db.sessions.begin() as session:
            audit.record(
                session, at=now, locker_id=locker_id or "", action="provisioning_refused",
                actor_kind="locker", reason=why, via=via, **extra,
            )  # fmt: skip

    async def decommission(self, actor: Actor, locker_id: str, reason: str) -> None:
        """Retire a locker for good. Raises :class:`NotFound`, :class:`Conflict`."""
        _require(actor, Role.ADMIN)
        now = self.ctx.clock.now()
        async with self.ctx.db.sessions.begin() as session:
            locker = await session.get(Locker, locker_id, with_for_update=True)
            if locker is None:
                raise NotFound(f"no locker {locker_id!r}")
            if locker.status == "decommissioned":
                raise Conflict(f"locker {locker_id} is already decommissioned")
            locker.status, locker.decommissioned_at, locker.online = "decommissioned", now, False
            await session.execute(
                update(ProvisioningToken)
                .where(
                    ProvisioningToken.locker_id == locker_id, ProvisioningToken.used_at.is_(None)
                )
                .values(expires_at=now)
                .execution_options(synchronize_session=False)
            )
            audit.record(
                session, at=now, locker_id=locker_id, action="decommissioned", actor=actor,
                reason=reason[:200],
            )  # fmt: skip
