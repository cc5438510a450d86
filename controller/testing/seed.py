"""A small county to test and demonstrate with: sites, carriers, users with tokens, lockers.

Used by the test suite, the demo and the scenario runner alike, through the services (so
everything seeded is valid by the same rules as anything created through the API).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.runtime import Runtime
from controller.services.context import SYSTEM, Role
from controller.services.lockers import CompartmentSpec
from controller.services.views import Credentials
from protocol.messages import SizeClass, TemperatureClass

DEFAULT_LAYOUT = [
    CompartmentSpec("A01", SizeClass.S), CompartmentSpec("A02", SizeClass.S),
    CompartmentSpec("A03", SizeClass.S), CompartmentSpec("B01", SizeClass.M),
    CompartmentSpec("B02", SizeClass.M), CompartmentSpec("B03", SizeClass.M),
    CompartmentSpec("C01", SizeClass.L), CompartmentSpec("C02", SizeClass.L),
    CompartmentSpec("D01", SizeClass.XL),
    CompartmentSpec("R01", SizeClass.M, TemperatureClass.CHILLED),
    CompartmentSpec("R02", SizeClass.L, TemperatureClass.CHILLED),
]  # fmt: skip


@dataclass
class Seeded:
    county_id: int
    township_ids: list[int]
    village_ids: list[int]
    carrier_ids: dict[str, int]
    tokens: dict[str, str]
    """Bearer tokens by role name: admin, technician, courier, courier2, agent, operator."""
    user_ids: dict[str, int]
    lockers: dict[str, Credentials] = field(default_factory=dict)
    locker_sites: dict[str, int] = field(default_factory=dict)


async def seed_county(
    runtime: Runtime,
    *,
    lockers: int = 2,
    townships: int = 2,
    villages_per_township: int = 2,
    prefix: str = "LK",
    layout: list[CompartmentSpec] | None = None,
) -> Seeded:
    """Create a county with townships, villages, three carriers, one user per role, and
    ``lockers`` lockers spread over townships and villages (registered with ``layout``)."""
    admin = runtime.services.admin
    county = await admin.create_site(
        SYSTEM, kind="county", name="宜川县", parent_id=None, division_code=None
    )
    township_ids, village_ids = [], []
    for t in range(townships):
        township = await admin.create_site(
            SYSTEM, kind="township", name=f"第{t + 1}镇", parent_id=county.id, division_code=None
        )
        township_ids.append(township.id)
        for v in range(villages_per_township):
            village = await admin.create_site(
                SYSTEM,
                kind="village",
                name=f"第{t + 1}镇{v + 1}村",
                parent_id=township.id,
                division_code=None,
            )
            village_ids.append(village.id)
    carriers = {}
    for code, name in (("ems", "中国邮政"), ("sf", "顺丰"), ("zto", "中通")):
        carriers[code] = await admin.create_carrier(SYSTEM, code=code, name=name)
    users: dict[str, tuple[Role, str | None, list[int]]] = {
        "admin": (Role.ADMIN, None, []),
        "technician": (Role.TECHNICIAN, None, []),
        "operator": (Role.OPERATOR, None, []),
        "courier": (Role.COURIER, "sf", []),
        "courier2": (Role.COURIER, "zto", []),
        "agent": (Role.AGENT, None, village_ids[: max(1, villages_per_township)]),
    }
    tokens, user_ids = {}, {}
    for name, (role, carrier, villages) in users.items():
        user = await admin.create_user(
            None, name=name, role=role, carrier_code=carrier, village_ids=villages
        )
        user_ids[name] = user.id
        tokens[name] = (await admin.issue_token(None, user_id=user.id, label=name)).token
    seeded = Seeded(county.id, township_ids, village_ids, carriers, tokens, user_ids)
    sites = [*township_ids, *village_ids]
    technician = await runtime.services.admin.authenticate(tokens["technician"])
    assert technician is not None
    for n in range(lockers):
        locker_id = f"{prefix}{n + 1:04d}"
        site_id = sites[n % len(sites)]
        seeded.lockers[locker_id] = await runtime.services.lockers.register(
            technician,
            locker_id=locker_id,
            site_id=site_id,
            name=f"柜{n + 1}",
            address=None,
            compartments=list(layout if layout is not None else DEFAULT_LAYOUT),
        )
        seeded.locker_sites[locker_id] = site_id
    return seeded
