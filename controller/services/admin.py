"""Administration: the site tree, carriers and their quotas, users, tokens, standing consent.

API tokens are ``lf_`` followed by 43 random URL-safe characters. Only their keyed hash is
stored (:meth:`controller.keys.KeyRing.token_hash`), so the token is shown once, when issued.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from controller.db.models import (
    AgentVillage,
    ApiToken,
    Carrier,
    CarrierQuota,
    Consent,
    Locker,
    Site,
    User,
)
from controller.domain.errors import Conflict, InvalidRequest, NotAllowed, NotFound
from controller.services.context import Actor, Context, Role
from controller.services.deposits import CONSENT_METHODS, recipient_by_phone

SITE_PARENT_KIND = {"county": None, "township": "county", "village": "township"}
DIVISION_DIGITS = {"county": 6, "township": 9, "village": 12}
"""National administrative division codes: 6 digits for a county, 9 for a township, 12 for a
village (the statistical zoning code)."""


@dataclass(frozen=True)
class SiteView:
    id: int
    parent_id: int | None
    kind: str
    name: str
    division_code: str | None


@dataclass(frozen=True)
class UserView:
    id: int
    name: str
    role: str
    carrier_id: int | None
    village_ids: list[int]
    active: bool


@dataclass(frozen=True)
class IssuedToken:
    id: int
    user_id: int
    token: str
    expires_at: datetime | None


def require_admin(actor: Actor) -> None:
    if actor.role is not Role.ADMIN:
        raise NotAllowed("this needs the admin role")


class AdminService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def create_site(
        self, actor: Actor, *, kind: str, name: str, parent_id: int | None,
        division_code: str | None,
    ) -> SiteView:  # fmt: skip
        """Add a county, township or village. Raises :class:`InvalidRequest`, :class:`Conflict`."""
        require_admin(actor)
        if kind not in SITE_PARENT_KIND:
            raise InvalidRequest("kind must be county, township or village")
        if division_code is not None and (
            not division_code.isdigit() or len(division_code) != DIVISION_DIGITS[kind]
        ):
            raise InvalidRequest(f"a {kind}'s division code has {DIVISION_DIGITS[kind]} digits")
        async with self.ctx.db.sessions.begin() as session:
            expected_parent = SITE_PARENT_KIND[kind]
            if expected_parent is None:
                if parent_id is not None:
                    raise InvalidRequest("a county has no parent site")
            else:
                parent = await session.get(Site, parent_id) if parent_id else None
                if parent is None or parent.kind != expected_parent:
                    raise InvalidRequest(f"a {kind} needs a {expected_parent} as parent")
            site = Site(
                kind=kind,
                name=name,
                parent_id=parent_id,
                division_code=division_code,
                created_at=self.ctx.clock.now(),
            )
            try:
                async with session.begin_nested():
                    session.add(site)
                    await session.flush()
            except IntegrityError:
                raise Conflict(f"division code {division_code} is taken") from None
            return SiteView(site.id, site.parent_id, site.kind, site.name, site.division_code)

    async def sites(self, actor: Actor) -> list[SiteView]:
        async with self.ctx.db.reader() as session:
            rows = await session.scalars(select(Site).order_by(Site.id))
            return [SiteView(s.id, s.parent_id, s.kind, s.name, s.division_code) for s in rows]

    async def create_carrier(self, actor: Actor, *, code: str, name: str) -> int:
        require_admin(actor)
        async with self.ctx.db.sessions.begin() as session:
            carrier = Carrier(code=code, name=name)
            try:
                async with session.begin_nested():
                    session.add(carrier)
                    await session.flush()
            except IntegrityError:
                raise Conflict(f"carrier {code!r} exists") from None
            return carrier.id

    async def set_quota(
        self, actor: Actor, *, locker_id: str, carrier_id: int, max_compartments: int | None
    ) -> None:
        """Limit a carrier's compartments at one locker (None lifts the limit)."""
        require_admin(actor)
        async with self.ctx.db.sessions.begin() as session:
            if await session.get(Locker, locker_id) is None:
                raise NotFound(f"no locker {locker_id!r}")
            quota = await session.get(CarrierQuota, (locker_id, carrier_id))
            if max_compartments is None:
                if quota is not None:
                    await session.delete(quota)
            elif quota is None:
                session.add(
                    CarrierQuota(
                        locker_id=locker_id,
                        carrier_id=carrier_id,
                        max_compartments=max_compartments,
                    )
                )
            else:
                quota.max_compartments = max_compartments

    async def create_user(
        self, actor: Actor | None, *, name: str, role: Role, carrier_code: str | None = None,
        village_ids: list[int] | None = None, phone: str | None = None,
    ) -> UserView:  # fmt: skip
        """Create a user. ``actor`` None is the command line (bootstrapping the first admin)."""
        if actor is not None:
            require_admin(actor)
        if (role is Role.COURIER) != (carrier_code is not None):
            raise InvalidRequest("a courier needs a carrier, and only a courier has one")
        if role is Role.AGENT and not village_ids:
            raise InvalidRequest("a village agent needs at least one village")
        async with self.ctx.db.sessions.begin() as session:
            carrier_id = None
            if carrier_code is not None:
                carrier_id = await session.scalar(
                    select(Carrier.id).where(Carrier.code == carrier_code)
                )
                if carrier_id is None:
                    raise NotFound(f"no carrier {carrier_code!r}")
            villages = village_ids or []
            for village_id in villages:
                site = await session.get(Site, village_id)
                if site is None or site.kind != "village":
                    raise InvalidRequest(f"site {village_id} is not a village")
            user = User(
                name=name,
                role=role.value,
                carrier_id=carrier_id,
                phone=phone,
                active=True,
                created_at=self.ctx.clock.now(),
            )
            session.add(user)
            await session.flush()
            for village_id in villages:
                session.add(AgentVillage(user_id=user.id, site_id=village_id))
            return UserView(user.id, name, role.value, carrier_id, villages, True)

    async def issue_token(
        self, actor: Actor | None, *, user_id: int, label: str, ttl: timedelta | None = None
    ) -> IssuedToken:
        """Issue a bearer token for a user; the token is in the result and nowhere else."""
        if actor is not None:
            require_admin(actor)
        token = "lf_" + secrets.token_urlsafe(32)
        now = self.ctx.clock.now()
        async with self.ctx.db.sessions.begin() as session:
            if await session.get(User, user_id) is None:
                raise NotFound(f"no user {user_id}")
            row = ApiToken(
                user_id=user_id,
                token_hash=self.ctx.keys.token_hash(token),
                label=label,
                created_at=now,
                expires_at=now + ttl if ttl else None,
            )
            session.add(row)
            await session.flush()
            return IssuedToken(row.id, user_id, token, row.expires_at)

    async def revoke_token(self, actor: Actor, token_id: int) -> None:
        require_admin(actor)
        async with self.ctx.db.sessions.begin() as session:
            row = await session.get(ApiToken, token_id)
            if row is None:
                raise NotFound(f"no token {token_id}")
            row.revoked_at = row.revoked_at or self.ctx.clock.now()

    async def record_standing_consent(
        self, actor: Actor, *, phone: str, method: str, village_site_id: int | None
    ) -> None:
        """Record a villager's standing consent to locker delivery (all carriers)."""
        if actor.role not in (Role.ADMIN, Role.AGENT):
            raise NotAllowed("standing consent is recorded by an admin or a village agent")
        if method not in CONSENT_METHODS:
            raise InvalidRequest(f"method must be one of {sorted(CONSENT_METHODS)}")
        if actor.role is Role.AGENT and village_site_id not in actor.village_ids:
            raise NotAllowed("an agent records consent for villagers of their own villages")
        async with self.ctx.db.sessions.begin() as session:
            recipient = await recipient_by_phone(session, self.ctx, phone, None, village_site_id)
            if village_site_id is not None and recipient.village_site_id is None:
                recipient.village_site_id = village_site_id
            session.add(
                Consent(
                    recipient_id=recipient.id,
                    scope="standing",
                    method=method,
                    recorded_by_user_id=actor.user_id or None,
                    recorded_at=self.ctx.clock.now(),
                )
            )

    async def authenticate(self, token: str) -> Actor | None:
        """Return the actor a bearer token stands for, or None if it is unknown, revoked,
        expired or its user inactive."""
        now = self.ctx.clock.now()
        async with self.ctx.db.reader() as session:
            # One round trip for the token and its user (every API call comes through here).
            found = (
                await session.execute(
                    select(
                        ApiToken.id, ApiToken.expires_at, ApiToken.revoked_at,
                        User.id, User.role, User.name, User.carrier_id, User.active,
                    )
                    .join(User, User.id == ApiToken.user_id)
                    .where(ApiToken.token_hash == self.ctx.keys.token_hash(token))
                )
            ).first()  # fmt: skip
            if found is None:
                return None
            token_id, expires_at, revoked_at, user_id, role, name, carrier_id, active = found
            if revoked_at is not None or not active:
                return None
            if expires_at is not None and expires_at <= now:
                return None
            villages: frozenset[int] = frozenset()
            if role == Role.AGENT:
                villages = frozenset(
                    (await session.scalars(
                        select(AgentVillage.site_id).where(AgentVillage.user_id == user_id)
                    )).all()
                )  # fmt: skip
            return Actor(user_id, Role(role), name, carrier_id, villages, token_id)
