"""Lockers: registering them (technicians), finding free compartments (couriers), live state.

Registration records the locker, its site and optionally its compartment layout (a locker
registered without one adopts the layout its first birth reports), and returns the
credentials it needs once. Keys are derived from the master secret (:mod:`controller.keys`),
so the database never holds them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import Compartment, Locker, Parcel, Site
from controller.domain.errors import Conflict, InvalidRequest, NotAllowed, NotFound
from controller.domain.states import HOLDING_STATES
from controller.services import audit
from controller.services.context import Actor, Context, Role
from controller.services.deposits import usable_compartments
from controller.services.views import CompartmentView, Credentials, LockerView
from protocol.fields import Pattern
from protocol.messages import SizeClass, TemperatureClass

_LOCKER_ID = Pattern(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_LABEL = Pattern(r"[A-Za-z0-9]{1,8}")
STAFF = frozenset({Role.ADMIN, Role.TECHNICIAN, Role.OPERATOR})


@dataclass(frozen=True)
class CompartmentSpec:
    label: str
    size: SizeClass
    temperature: TemperatureClass = TemperatureClass.AMBIENT


def require(actor: Actor, *roles: Role) -> None:
    if actor.role not in roles:
        raise NotAllowed(f"this needs the role {' or '.join(r.value for r in roles)}")


def credentials(ctx: Context, locker: Locker) -> Credentials:
    """The locker's credentials: broker password and command key of its ``key_generation``,
    code key of its ``code_key_generation`` (kept apart, so a rotation keeps codes valid)."""
    generation = locker.key_generation
    return Credentials(
        locker_id=locker.id,
        mqtt_username=locker.id,
        mqtt_password=ctx.keys.mqtt_password(locker.id, generation),
        command_key_hex=ctx.keys.command_key(locker.id, generation).hex(),
        code_key_hex=ctx.keys.code_key(locker.id, locker.code_key_generation).hex(),
        topic_root=ctx.topics.root,
    )


class LockerService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def register(
        self,
        actor: Actor,
        *,
        locker_id: str,
        site_id: int,
        name: str,
        address: str | None = None,
        compartments: list[CompartmentSpec] | None = None,
    ) -> Credentials:
        """Register a locker; return its credentials. Raises :class:`Conflict` if it exists."""
        require(actor, Role.ADMIN, Role.TECHNICIAN)
        if not _LOCKER_ID.compiled.fullmatch(locker_id):
            raise InvalidRequest("locker_id: 1-64 of A-Z a-z 0-9 _ -, starting alphanumeric")
        specs = compartments or []
        labels = [c.label for c in specs]
        if len(set(labels)) != len(labels) or not all(_LABEL.compiled.fullmatch(x) for x in labels):
            raise InvalidRequest("compartment labels must be unique, 1-8 letters or digits")
        now = self.ctx.clock.now()
        async with self.ctx.db.sessions.begin() as session:
            if await session.get(Site, site_id) is None:
                raise NotFound(f"no site {site_id}")
            locker = Locker(
                id=locker_id, site_id=site_id, name=name, address=address, status="registered",
                key_generation=1, code_key_generation=1, created_at=now,
            )  # fmt: skip
            try:
                async with session.begin_nested():
                    session.add(locker)
                    await session.flush()
            except IntegrityError:
                raise Conflict(f"locker {locker_id} is registered already") from None
            for spec in specs:
                session.add(
                    Compartment(
                        locker_id=locker_id, label=spec.label, size=spec.size.value,
                        temperature=spec.temperature.value, updated_at=now,
                    )
                )  # fmt: skip
            audit.record(
                session,
                at=now,
                locker_id=locker_id,
                action="locker_registered",
                actor=actor,
                compartments=len(specs),
            )
            await session.flush()
            return credentials(self.ctx, locker)

    async def list(
        self, actor: Actor, *, site_id: int | None = None, near_site_id: int | None = None
    ) -> list[LockerView]:
        """Lockers (at a site, or in the township around a site) with free compartments."""
        async with self.ctx.db.reader() as session:
            query = select(Locker).where(Locker.status != "decommissioned")
            if site_id is not None:
                query = query.where(Locker.site_id == site_id)
            if near_site_id is not None:
                query = query.where(Locker.site_id.in_(await _neighbourhood(session, near_site_id)))
            lockers = (await session.scalars(query.order_by(Locker.id))).all()
            return [
                LockerView.of(locker, free=await free_by_class(session, locker.id))
                for locker in lockers
            ]

    async def state(self, actor: Actor, locker_id: str) -> LockerView:
        """Live state of one locker: compartments, telemetry, code-cache versions."""
        require(actor, *STAFF)
        async with self.ctx.db.reader() as session:
            locker = await session.get(Locker, locker_id)
            if locker is None:
                raise NotFound(f"no locker {locker_id!r}")
            holding = {
                p.compartment_id: p
                for p in await session.scalars(
                    select(Parcel).where(
                        Parcel.locker_id == locker_id,
                        Parcel.state.in_([s.value for s in HOLDING_STATES]),
                    )
                )
            }
            compartments = await session.scalars(
                select(Compartment)
                .where(Compartment.locker_id == locker_id)
                .order_by(Compartment.label)
            )
            return LockerView.of(
                locker,
                free=await free_by_class(session, locker_id),
                compartments=[CompartmentView.of(c, holding.get(c.id)) for c in compartments],
                telemetry=locker.last_telemetry,
                code_cache={
                    "target": locker.code_cache_version,
                    "reported": locker.code_cache_reported,
                },
            )

    async def set_in_service(
        self, actor: Actor, locker_id: str, label: str, *, in_service: bool, reason: str | None
    ) -> CompartmentView:
        """Take a compartment out of service (with a reason) or put it back."""
        require(actor, Role.ADMIN, Role.TECHNICIAN)
        if not in_service and not reason:
            raise InvalidRequest("say why the compartment goes out of service")
        async with self.ctx.db.sessions.begin() as session:
            compartment = await session.scalar(
                select(Compartment)
                .where(Compartment.locker_id == locker_id, Compartment.label == label)
                .with_for_update()
            )
            if compartment is None:
                raise NotFound(f"no compartment {label} at locker {locker_id}")
            compartment.out_of_service_reason = None if in_service else reason
            audit.record(
                session, at=self.ctx.clock.now(), locker_id=locker_id, compartment=label,
                action="compartment_in_service" if in_service else "compartment_out_of_service",
                actor=actor, reason=reason,
            )  # fmt: skip
            parcel = (
                await session.scalars(
                    select(Parcel).where(
                        Parcel.compartment_id == compartment.id,
                        Parcel.state.in_([s.value for s in HOLDING_STATES]),
                    )
                )
            ).first()
            return CompartmentView.of(compartment, parcel)

    async def credentials(self, actor: Actor, locker_id: str) -> Credentials:
        require(actor, Role.ADMIN)
        async with self.ctx.db.reader() as session:
            locker = await session.get(Locker, locker_id)
            if locker is None:
                raise NotFound(f"no locker {locker_id!r}")
            return credentials(self.ctx, locker)


async def free_by_class(session: AsyncSession, locker_id: str) -> dict[str, int]:
    """Free compartments counted by ``size/temperature``."""
    counts = Counter(
        f"{c.size.value}/{c.temperature.value}"
        for c in await usable_compartments(session, locker_id)
        if c.usable
    )
    return dict(sorted(counts.items()))


async def _neighbourhood(session: AsyncSession, site_id: int) -> set[int]:
    """The site, its parent township, and every site below that township."""
    site = await session.get(Site, site_id)
    if site is None:
        raise NotFound(f"no site {site_id}")
    top = site.parent_id if site.kind == "village" and site.parent_id else site.id
    found, frontier = {top}, {top}
    while frontier:
        children = set(
            (await session.scalars(select(Site.id).where(Site.parent_id.in_(frontier)))).all()
        )
        frontier = children - found
        found |= children
    return found
