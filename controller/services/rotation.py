"""Rotating and revoking a locker's credentials (its broker password and command key).

Both bump the locker's ``key_generation``: the controller signs commands and acknowledgements
with the new command key at once, and the next ``lockerfleet broker-config mosquitto`` (then a
broker reload) writes the new password, so the old one stops working. Unused provisioning
tokens of the locker die with the old generation, so a token issued (or leaked) before cannot
bring the old identity back.

* **Rotation** (:meth:`CredentialRotation.rotate`) also issues a provisioning token: the locker
  re-provisions with it (HTTP redeem, bench or MQTT provisioning) and gets the new password and
  command key. Until it does, it cannot connect once the broker is reloaded, and commands and
  acknowledgements signed with the new key do not verify on it; its events wait in its buffer.
* **Revocation** (:meth:`CredentialRotation.revoke`, admins) issues no token: the locker is shut
  out until a technician issues one (e.g. after replacing a stolen board).

The code key has a generation of its own (``code_key_generation``), untouched by both: the
pickup codes already in the locker's offline cache keep opening their doors. Decommissioning
stays final: a decommissioned locker is neither rotated nor revoked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import update

from controller.db.models import ProvisioningToken
from controller.domain.errors import InvalidRequest
from controller.services import audit
from controller.services.context import Actor, Context, Role
from controller.services.lockers import require
from controller.services.parcel_flow import lock_fleet_locker
from controller.services.provisioning import (
    DEFAULT_TTL,
    MAX_TTL,
    IssuedProvisioningToken,
    ProvisioningService,
)

NEXT_STEP = (
    "regenerate the broker configuration (lockerfleet broker-config mosquitto) and reload the "
    "broker: the old broker password works until then"
)


@dataclass(frozen=True)
class CredentialChange:
    locker_id: str
    action: str
    """``rotated`` or ``revoked``."""
    key_generation: int
    """The new generation of the broker password and command key."""
    provisioning_token: IssuedProvisioningToken | None
    """For a rotation: the token the locker re-provisions with (shown once)."""
    next_step: str = NEXT_STEP


class CredentialRotation:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def rotate(
        self, actor: Actor, locker_id: str, reason: str, ttl: timedelta = DEFAULT_TTL
    ) -> CredentialChange:
        """New broker password and command key, and a token to re-provision with (admins,
        technicians). Raises :class:`NotFound`, :class:`Conflict` (decommissioned),
        :class:`InvalidRequest`."""
        require(actor, Role.ADMIN, Role.TECHNICIAN)
        if not timedelta(0) < ttl <= MAX_TTL:
            raise InvalidRequest(f"a provisioning token lives between 1 s and {MAX_TTL}")
        generation = await self._bump(actor, locker_id, reason, "credentials_rotated")
        token = await ProvisioningService(self.ctx).issue_token(actor, locker_id, ttl)
        return CredentialChange(locker_id, "rotated", generation, token)

    async def revoke(self, actor: Actor, locker_id: str, reason: str) -> CredentialChange:
        """Shut the locker's current identity out, issuing nothing (admins). Raises
        :class:`NotFound`, :class:`Conflict` (decommissioned), :class:`InvalidRequest`."""
        require(actor, Role.ADMIN)
        generation = await self._bump(actor, locker_id, reason, "credentials_revoked")
        return CredentialChange(locker_id, "revoked", generation, None)

    async def _bump(self, actor: Actor, locker_id: str, reason: str, action: str) -> int:
        if not reason.strip():
            raise InvalidRequest("say why the credentials change")
        now = self.ctx.clock.now()
        async with self.ctx.db.sessions.begin() as session:
            locker = await lock_fleet_locker(session, locker_id, "; its identity is gone")
            old = locker.key_generation
            locker.key_generation = old + 1
            expired = await session.execute(
                update(ProvisioningToken)
                .where(
                    ProvisioningToken.locker_id == locker_id,
                    ProvisioningToken.used_at.is_(None),
                    ProvisioningToken.expires_at > now,
                )
                .values(expires_at=now)
                .execution_options(synchronize_session=False)
            )
            audit.record(
                session, at=now, locker_id=locker_id, action=action, actor=actor,
                old_generation=old, key_generation=old + 1, reason=reason[:200],
                tokens_withdrawn=expired.rowcount,  # type: ignore[attr-defined]
            )  # fmt: skip
            return old + 1
