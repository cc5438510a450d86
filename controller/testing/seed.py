"""A small county for tests: two townships of two villages, three carriers, one user per role
(``admin``, ``technician``, ``operator``, ``courier`` of SF, ``courier2`` of ZTO, ``agent`` of
the first township's villages), and lockers with :data:`DEFAULT_LAYOUT`."""

from __future__ import annotations

from controller.demo.county import County, CountyPlan, LockerPlan, SitePlan, UserPlan, build_county
from controller.runtime import Runtime
from controller.services.context import Role
from controller.services.lockers import CompartmentSpec
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

Seeded = County


def small_county_plan(
    lockers: int, prefix: str, layout: list[CompartmentSpec] | None = None
) -> CountyPlan:
    sites = [SitePlan("county", "county", "宜川县", None, None)]
    for t in range(2):
        sites.append(SitePlan(f"t{t}", "township", f"第{t + 1}镇", None, "county"))
        for v in range(2):
            sites.append(SitePlan(f"t{t}v{v}", "village", f"第{t + 1}镇{v + 1}村", None, f"t{t}"))
    places = ["t0", "t1", "t0v0", "t0v1", "t1v0", "t1v1"]
    return CountyPlan(
        sites=sites,
        carriers=[("ems", "中国邮政"), ("sf", "顺丰"), ("zto", "中通")],
        users=[
            UserPlan("admin", Role.ADMIN),
            UserPlan("technician", Role.TECHNICIAN),
            UserPlan("operator", Role.OPERATOR),
            UserPlan("courier", Role.COURIER, carrier="sf"),
            UserPlan("courier2", Role.COURIER, carrier="zto"),
            UserPlan("agent", Role.AGENT, villages=("t0v0", "t0v1")),
        ],
        lockers=[
            LockerPlan(
                f"{prefix}{n + 1:04d}",
                places[n % len(places)],
                f"第{n + 1}号快递柜",
                list(layout if layout is not None else DEFAULT_LAYOUT),
            )
            for n in range(lockers)
        ],
    )


async def seed_county(
    runtime: Runtime, *, lockers: int = 2, prefix: str = "LK",
    layout: list[CompartmentSpec] | None = None,
) -> Seeded:  # fmt: skip
    """Build the small test county (see the module docstring) and return it."""
    return await build_county(runtime, small_county_plan(lockers, prefix, layout))
