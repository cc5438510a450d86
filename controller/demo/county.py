"""A county to run lockerfleet on: plan it (pure, deterministic for a seed), then build it
through the services (so everything built obeys the same rules as anything made via the API).

The generated county is modelled on 沂源县 (Yiyuan, Shandong; division code 370323), whose
2020 "express delivery to every village" plan is one of the papers this project comes from:
a county hub, townships (镇/街道) with a larger locker each, and villages (村) with smaller ones.
Township and village division codes are generated in the right shape (9 and 12 digits) but
are illustrative, not the official ones.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from controller.runtime import Runtime
from controller.services.context import SYSTEM, Role
from controller.services.lockers import CompartmentSpec
from controller.services.views import Credentials
from protocol.messages import SizeClass, TemperatureClass

TOWNSHIPS = [
    "南麻街道", "历山街道", "南鲁山镇", "中庄镇", "燕崖镇", "西里镇",
    "东里镇", "悦庄镇", "大张庄镇", "石桥镇", "张家坡镇", "鲁村镇",
]  # fmt: skip
VILLAGE_FIRST = "东西南北上下前后大小"
VILLAGE_SECOND = ["峪", "庄", "河", "坡", "岭", "沟", "店", "崖"]
CARRIERS = [("ems", "中国邮政"), ("sf", "顺丰速运"), ("zto", "中通快递"), ("yto", "圆通速递")]

S, M, L, XL = SizeClass.S, SizeClass.M, SizeClass.L, SizeClass.XL
AMBIENT, CHILLED = TemperatureClass.AMBIENT, TemperatureClass.CHILLED


def layout(blocks: list[tuple[str, SizeClass, TemperatureClass, int]]) -> list[CompartmentSpec]:
    """Compartments labelled by column letter and number: ``[("A", S, AMBIENT, 6), ...]``."""
    return [CompartmentSpec(f"{col}{n:02d}", size, temp)
            for col, size, temp, count in blocks for n in range(1, count + 1)]  # fmt: skip


TOWNSHIP_LAYOUT = layout(
    [
        ("A", S, AMBIENT, 10),
        ("B", M, AMBIENT, 12),
        ("C", L, AMBIENT, 8),
        ("D", XL, AMBIENT, 2),
        ("R", M, CHILLED, 2),
        ("S", L, CHILLED, 2),
    ]
)
VILLAGE_LAYOUT = layout([("A", S, AMBIENT, 5), ("B", M, AMBIENT, 6), ("C", L, AMBIENT, 3),
                         ("D", XL, AMBIENT, 1), ("R", M, CHILLED, 1)])  # fmt: skip


@dataclass(frozen=True)
class SitePlan:
    key: str
    kind: str
    name: str
    division_code: str | None
    parent: str | None


@dataclass(frozen=True)
class LockerPlan:
    locker_id: str
    site: str
    name: str
    compartments: list[CompartmentSpec]


@dataclass(frozen=True)
class UserPlan:
    name: str
    role: Role
    carrier: str | None = None
    villages: tuple[str, ...] = ()


@dataclass(frozen=True)
class CountyPlan:
    sites: list[SitePlan]
    carriers: list[tuple[str, str]]
    users: list[UserPlan]
    lockers: list[LockerPlan]


@dataclass
class County:
    """What was built: ids by plan key, a token per user, each locker's credentials."""

    site_ids: dict[str, int]
    carrier_ids: dict[str, int]
    user_ids: dict[str, int]
    tokens: dict[str, str]
    lockers: dict[str, Credentials] = field(default_factory=dict)
    layouts: dict[str, list[CompartmentSpec]] = field(default_factory=dict)
    locker_sites: dict[str, int] = field(default_factory=dict)
    village_ids: list[int] = field(default_factory=list)
    township_ids: list[int] = field(default_factory=list)

    @property
    def county_id(self) -> int:
        return self.site_ids["county"]


def plan_county(lockers: int, seed: int = 1, prefix: str = "YY") -> CountyPlan:
    """Plan a county with ``lockers`` lockers: one per township, the rest in villages."""
    if lockers < 1:
        raise ValueError("a county needs at least one locker")
    rng = random.Random(seed)
    townships = min(len(TOWNSHIPS), max(1, lockers // 8 or 1))
    per_township = max(2, math.ceil((lockers - townships) / townships))
    sites = [SitePlan("county", "county", "沂源县", "370323", None)]
    village_keys: dict[str, list[str]] = {}
    for t in range(townships):
        key = f"t{t}"
        sites.append(SitePlan(key, "township", TOWNSHIPS[t], f"370323{100 + t:03d}", "county"))
        names = rng.sample([a + b for a in VILLAGE_FIRST for b in VILLAGE_SECOND], per_township)
        village_keys[key] = []
        for v, name in enumerate(names):
            vkey = f"{key}v{v}"
            code = f"370323{100 + t:03d}{200 + v:03d}"
            sites.append(SitePlan(vkey, "village", f"{name}村", code, key))
            village_keys[key].append(vkey)
    placements = [f"t{t}" for t in range(townships)]
    placements += [v for keys in zip(*village_keys.values(), strict=False) for v in keys]
    planned = []
    for n in range(lockers):
        site = placements[n % len(placements)]
        is_township = "v" not in site
        name = next(s.name for s in sites if s.key == site)
        planned.append(LockerPlan(
            f"{prefix}{n + 1:04d}", site, f"{name}{'服务中心' if is_township else '村委'}快递柜",
            list(TOWNSHIP_LAYOUT if is_township else VILLAGE_LAYOUT),
        ))  # fmt: skip
    users = [UserPlan("admin", Role.ADMIN), UserPlan("technician", Role.TECHNICIAN),
             UserPlan("operator", Role.OPERATOR)]  # fmt: skip
    users += [UserPlan(f"courier-{code}", Role.COURIER, carrier=code) for code, _ in CARRIERS]
    users += [UserPlan(f"agent-t{t}", Role.AGENT, villages=tuple(village_keys[f"t{t}"]))
              for t in range(townships)]  # fmt: skip
    return CountyPlan(sites, list(CARRIERS), users, planned)


async def build_county(runtime: Runtime, plan: CountyPlan) -> County:
    """Create everything in ``plan`` through the services; return what was created."""
    admin = runtime.services.admin
    county = County({}, {}, {}, {})
    for site in plan.sites:
        parent = county.site_ids[site.parent] if site.parent else None
        made = await admin.create_site(
            SYSTEM,
            kind=site.kind,
            name=site.name,
            parent_id=parent,
            division_code=site.division_code,
        )
        county.site_ids[site.key] = made.id
        {"village": county.village_ids, "township": county.township_ids}.get(site.kind, []).append(
            made.id
        )
    for code, name in plan.carriers:
        county.carrier_ids[code] = await admin.create_carrier(SYSTEM, code=code, name=name)
    for user in plan.users:
        made_user = await admin.create_user(
            None, name=user.name, role=user.role, carrier_code=user.carrier,
            village_ids=[county.site_ids[v] for v in user.villages],
        )  # fmt: skip
        county.user_ids[user.name] = made_user.id
        issued = await admin.issue_token(None, user_id=made_user.id, label=user.name)
        county.tokens[user.name] = issued.token
    technician = await admin.authenticate(county.tokens["technician"])
    assert technician is not None
    for locker in plan.lockers:
        site_id = county.site_ids[locker.site]
        county.lockers[locker.locker_id] = await runtime.services.lockers.register(
            technician, locker_id=locker.locker_id, site_id=site_id, name=locker.name,
            compartments=locker.compartments,
        )  # fmt: skip
        county.layouts[locker.locker_id] = locker.compartments
        county.locker_sites[locker.locker_id] = site_id
    return county
