"""Scenario files: plain TOML a user can write (see ``builtin/`` for examples).

::

    name = "my-scenario"
    lockers = 20              # simulated lockers in a generated county
    seed = 1
    duration_s = 60           # traffic runs this long; then the system settles and is checked
    deposits_per_minute = 60
    produce_share = 0.1       # of the traffic, outbound produce booked by agents
    villagers_come_after_s = [3, 20]
    villager_no_show = 0.05
    villager_mistype = 0.1
    heartbeat_s = 5

    [[faults]]                # a firmware_sim fault: network_drop, door_jam, stuck_sensor,
    at_s = 20                 # power_loss, reboot, clock_skew, temperature_excursion
    kind = "door_jam"
    lockers = 2               # how many (picked by the seed), or a list of locker ids
    duration_s = 30

    [[outages]]               # the broker itself goes away (Mosquitto started by the runner)
    at_s = 25
    duration_s = 15
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_sim.faults import FaultKind

BUILTIN = Path(__file__).parent / "builtin"


class ScenarioError(ValueError):
    """The scenario file is not usable; the message says where and why."""


@dataclass(frozen=True)
class FaultStep:
    at_s: float
    kind: FaultKind
    duration_s: float
    lockers: int | tuple[str, ...]


@dataclass(frozen=True)
class Outage:
    at_s: float
    duration_s: float


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str = ""
    lockers: int = 20
    seed: int = 1
    duration_s: float = 60.0
    deposits_per_minute: float = 60.0
    produce_share: float = 0.1
    villagers_come_after_s: tuple[float, float] = (3.0, 20.0)
    villager_no_show: float = 0.05
    villager_mistype: float = 0.1
    heartbeat_s: int = 5
    faults: tuple[FaultStep, ...] = field(default_factory=tuple)
    outages: tuple[Outage, ...] = field(default_factory=tuple)

    def with_overrides(self, *, lockers: int | None, seed: int | None) -> Scenario:
        from dataclasses import replace

        return replace(self, lockers=lockers or self.lockers,
                       seed=self.seed if seed is None else seed)  # fmt: skip


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN.glob("*.toml"))


def load(name_or_path: str) -> Scenario:
    """Return a built-in scenario by name, or the scenario in a TOML file.

    Raises :class:`ScenarioError` naming the problem.
    """
    path = BUILTIN / f"{name_or_path}.toml"
    if not path.exists():
        path = Path(name_or_path)
    if not path.exists():
        raise ScenarioError(
            f"no scenario {name_or_path!r}: give a file or one of {', '.join(builtin_names())}"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    return parse(data, source=str(path))


def parse(data: dict[str, Any], source: str = "scenario") -> Scenario:
    try:
        faults = tuple(
            FaultStep(float(f["at_s"]), FaultKind(f["kind"]), float(f.get("duration_s", 30)),
                      tuple(f["lockers"]) if isinstance(f.get("lockers"), list)
                      else int(f.get("lockers", 1)))
            for f in data.get("faults", [])
        )  # fmt: skip
        outages = tuple(
            Outage(float(o["at_s"]), float(o["duration_s"])) for o in data.get("outages", [])
        )
        come = data.get("villagers_come_after_s", [3, 20])
        scenario = Scenario(
            name=str(data["name"]),
            description=str(data.get("description", "")),
            lockers=int(data.get("lockers", 20)),
            seed=int(data.get("seed", 1)),
            duration_s=float(data.get("duration_s", 60)),
            deposits_per_minute=float(data.get("deposits_per_minute", 60)),
            produce_share=float(data.get("produce_share", 0.1)),
            villagers_come_after_s=(float(come[0]), float(come[1])),
            villager_no_show=float(data.get("villager_no_show", 0.05)),
            villager_mistype=float(data.get("villager_mistype", 0.1)),
            heartbeat_s=int(data.get("heartbeat_s", 5)),
            faults=faults,
            outages=outages,
        )
    except KeyError as exc:
        raise ScenarioError(f"{source}: missing {exc.args[0]!r}") from None
    except (TypeError, ValueError, IndexError) as exc:
        raise ScenarioError(f"{source}: {exc}") from None
    if scenario.lockers < 1 or scenario.duration_s <= 0:
        raise ScenarioError(f"{source}: lockers must be >= 1 and duration_s > 0")
    return scenario
