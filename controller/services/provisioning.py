"""Provisioning a locker with a one-time token, and decommissioning it for good.

A technician asks for a provisioning token for a registered locker (:meth:`issue_token`). The
token is shown once; the database keeps only its keyed hash
(:meth:`~controller.keys.KeyRing.token_hash`), so a database dump yields no usable token. The
locker — or the technician's bench tool on its behalf — trades it once for the locker's
credentials (:meth:`redeem`): broker user and password, command key, code key. Redeeming is an
atomic ``UPDATE ... WHERE used_at IS NULL AND expires_at > now``, so two replicas handed the same
token at the same moment give the credentials out once. An expired, used or unknown token is
refused with the same message, so a guesser learns nothing.

Decommissioning (:meth:`decommission`) is final: the ingest drops the locker's messages, its
unused tokens die, no token can be issued for it again, and ``broker-config`` leaves it out of
the broker's password file.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update

from controller.db.models import Locker, ProvisioningToken
from controller.domain.errors import Conflict, InvalidRequest, NotAllowed, NotFound
from controller.services import audit
from controller.services.context import Actor, Context, Role
from controller.services.lockers import credentials
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
            locker = await session.get(Locker, locker_id, with_for_update=True)
            if locker is None:
                raise NotFound(f"no locker {locker_id!r}")
            if locker.status == "decommissioned":
                raise Conflict(f"locker {locker_id} is decommissioned")
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

    async def redeem(self, token: str) -> Credentials:
        """Trade a token for its locker's credentials, once.

        Raises :class:`InvalidProvisioningToken` for an unknown, used or expired token.
        """
        refused = InvalidProvisioningToken("the provisioning token is unknown, used or expired")
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            raise refused
        now = self.ctx.clock.now()
        async with self.ctx.db.sessions.begin() as session:
            used = await session.execute(
                update(ProvisioningToken)
                .where(
                    ProvisioningToken.token_hash == self.ctx.keys.token_hash(token),
                    ProvisioningToken.used_at.is_(None),
                    ProvisioningToken.expires_at > now,
                )
                .values(used_at=now)
                .returning(ProvisioningToken.locker_id)
                .execution_options(synchronize_session=False)
            )
            locker_id = used.scalar_one_or_none()
            if locker_id is None:
                raise refused
            locker = await session.get(Locker, locker_id, with_for_update=True)
            if locker is None or locker.status == "decommissioned":
                raise refused
            audit.record(
                session, at=now, locker_id=locker_id, action="provisioned", actor_kind="locker",
                key_generation=locker.key_generation,
            )  # fmt: skip
            return credentials(self.ctx, locker)

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
