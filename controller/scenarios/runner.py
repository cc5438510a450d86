"""Running a scenario: start (or attach to) a broker, a database and the controller, run the fleet
and the simulated people against the real HTTP API and keypads, inject the faults and outages on
schedule, let the system settle, then check the invariants and write the reports.

Deterministic for a seed in what it asks for (the county, the traffic, which lockers get which
fault); how the network interleaves the resulting messages is up to the machine, which is exactly
what the invariants must survive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select

from controller.db.models import Command
from controller.demo.county import plan_county
from controller.demo.stack import Stack, StackOptions
from controller.demo.traffic import Traffic
from controller.demo.villagers import VillagerSender
from controller.scenarios.invariants import Check, Evidence, check_all
from controller.scenarios.spec import Scenario
from firmware_sim.faults import Fault
from firmware_sim.people import AttendantPolicy, Delays

log = logging.getLogger("lockerfleet.scenario")
SETTLE_S = 90.0


@dataclass
class ScenarioResult:
    scenario: Scenario
    checks: list[Check]
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    settled: bool = True

    @property
    def ok(self) -> bool:
        return self.settled and all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "ok": self.ok,
            "settled": self.settled,
            "seconds": round(self.seconds, 1),
            "lockers": self.scenario.lockers,
            "seed": self.scenario.seed,
            "counts": self.counts,
            "checks": [asdict(c) for c in self.checks],
        }

    def to_junit(self) -> ET.ElementTree[ET.Element[str]]:
        failures = sum(1 for c in self.checks if not c.ok)
        suite = ET.Element("testsuite", name=f"lockerfleet.{self.scenario.name}",
                           tests=str(len(self.checks)), failures=str(failures),
                           time=f"{self.seconds:.1f}")  # fmt: skip
        for check in self.checks:
            case = ET.SubElement(suite, "testcase", classname=f"scenario.{self.scenario.name}",
                                 name=check.name)  # fmt: skip
            if not check.ok:
                ET.SubElement(case, "failure", message=check.detail[:200]).text = check.detail
            else:
                ET.SubElement(case, "system-out").text = check.detail
        return ET.ElementTree(suite)


class Progress:
    """A one-line progress bar on a terminal; nothing when output is not a terminal."""

    def __init__(self, total_s: float, out: TextIO = sys.stderr) -> None:
        self.total, self.out = total_s, out
        self.enabled = out.isatty()

    def show(self, elapsed: float, note: str) -> None:
        if not self.enabled:
            return
        done = min(elapsed / self.total, 1.0) if self.total else 1.0
        bar = "#" * int(done * 30)
        self.out.write(f"\r[{bar:<30}] {elapsed:5.0f}/{self.total:.0f} s  {note:<50}")
        self.out.flush()

    def end(self) -> None:
        if self.enabled:
            self.out.write("\n")


async def run_scenario(
    scenario: Scenario,
    *,
    data_dir: Path,
    broker_url: str | None = None,
    database_url: str | None = None,
) -> ScenarioResult:
    """Run ``scenario`` end to end and return its checks (see the module docstring)."""
    started = time.monotonic()
    plan = plan_county(scenario.lockers, seed=scenario.seed, prefix="YY")
    stack = Stack(StackOptions(
        plan=plan, data_dir=data_dir, broker_url=broker_url, database_url=database_url,
        port=None, heartbeat_s=scenario.heartbeat_s, seed=scenario.seed,
        attendant=AttendantPolicy(delays=Delays.fast()),
    ))  # fmt: skip
    villagers = VillagerSender(
        stack, come_after_s=scenario.villagers_come_after_s, no_show=scenario.villager_no_show,
        mistype=scenario.villager_mistype, seed=scenario.seed, echo=False,
    )  # fmt: skip
    evidence = Evidence()
    counts: dict[str, int] = {}
    progress = Progress(scenario.duration_s)
    try:
        await stack.start(sender=lambda _s: villagers)
        if not await stack.wait_ready():
            raise RuntimeError("the fleet did not come online within 120 s")
        assert stack.county is not None and stack.fleet is not None
        traffic = Traffic(stack.base_url, stack.county, villagers,
                          deposits_per_minute=scenario.deposits_per_minute,
                          produce_share=scenario.produce_share, seed=scenario.seed)  # fmt: skip
        traffic_task = asyncio.create_task(traffic.run())
        await _drive(scenario, stack, evidence, progress)
        traffic_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await traffic_task
        await villagers.finish()  # nobody new sets out; those at a locker finish
        progress.end()
        evidence.created_tracking = set(traffic.created)
        unsettled = await _settle(stack)
        settled = unsettled is None
        checks = await check_all(stack.runtime, stack.fleet, evidence)  # type: ignore[arg-type]
        fleet_counts = {f"fleet_{k}": v for k, v in stack.fleet.locker_counters().items()}
        counts = {**traffic.counts, **villagers.counts, **fleet_counts}
        if not settled:
            checks.insert(0, Check("the system settled after the traffic stopped", False,
                                   f"after {SETTLE_S:.0f} s: {unsettled}"))  # fmt: skip
        return ScenarioResult(scenario, checks, dict(counts), time.monotonic() - started, settled)
    finally:
        await villagers.close()
        await stack.stop()


async def _drive(scenario: Scenario, stack: Stack, evidence: Evidence, progress: Progress) -> None:
    """Wait out the scenario's duration, injecting faults and outages when due."""
    assert stack.fleet is not None
    fleet = stack.fleet
    rng = random.Random(scenario.seed)
    lockers = sorted(fleet.lockers)
    steps: list[tuple[float, str, Any]] = [(f.at_s, "fault", f) for f in scenario.faults]
    steps += [(o.at_s, "outage", o) for o in scenario.outages]
    steps.sort(key=lambda s: s[0])
    begin = time.monotonic()
    while True:
        elapsed = time.monotonic() - begin
        while steps and steps[0][0] <= elapsed:
            _at, what, step = steps.pop(0)
            if what == "fault":
                targets = (
                    list(step.lockers)
                    if isinstance(step.lockers, tuple)
                    else rng.sample(lockers, min(step.lockers, len(lockers)))
                )
                for locker_id in targets:
                    fault = Fault(step.kind, duration_ms=int(step.duration_s * 1000))
                    if await asyncio.to_thread(fleet.inject, locker_id, fault):
                        evidence.faults.append((step.kind.value, locker_id))
                log.info("fault %s on %s", step.kind.value, targets)
            else:
                asyncio.get_running_loop().create_task(_outage(stack, step.duration_s))
        if elapsed >= scenario.duration_s:
            return
        progress.show(elapsed, f"{len(evidence.faults)} faults injected")
        await asyncio.sleep(0.5)


async def _outage(stack: Stack, duration_s: float) -> None:
    """Take the broker away for ``duration_s``: the real process when we started it."""
    assert stack.broker is not None and stack.fleet is not None
    process = stack.broker._mosquitto
    log.info("broker outage for %.0f s", duration_s)
    if process is not None:
        await asyncio.to_thread(process.kill)
        await asyncio.sleep(duration_s)
        await asyncio.to_thread(process.start)
    else:  # a broker we do not own: cut the lockers off instead
        await asyncio.to_thread(stack.fleet.broker_outage, int(duration_s * 1000))


async def _settle(stack: Stack) -> str | None:
    """Wait until every locker is online with an empty buffer and every door shut (people
    finish what they started), and no command is open. Return None when settled, else what
    was still unsettled when the time ran out."""
    assert stack.runtime is not None and stack.fleet is not None
    fleet, runtime = stack.fleet, stack.runtime
    deadline = time.monotonic() + SETTLE_S
    state, quiet_polls = "", 0
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        views = [await asyncio.to_thread(fleet.view, lid) for lid in fleet.lockers]
        buffered = {v.locker_id: v.pending_events for v in views if v.pending_events}
        doors_open = {v.locker_id: v.doors_open for v in views if v.doors_open}
        async with runtime.db.reader() as session:
            open_commands = (await session.execute(
                select(Command.locker_id, Command.action, Command.state)
                .where(Command.state.in_(["pending", "sent"]))
            )).all()  # fmt: skip
        online = await stack.lockers_online()
        commands = [tuple(c) for c in open_commands][:5]
        people_busy = await asyncio.to_thread(fleet.run, lambda: len(fleet.agenda))
        state = (f"lockers online {online}/{len(views)}, unacknowledged {buffered}, "
                 f"doors open {doors_open}, open commands {commands}, "
                 f"people still acting {people_busy}")  # fmt: skip
        quiet = not (buffered or open_commands or doors_open or people_busy)
        if quiet and online == len(views):
            quiet_polls += 1
            if quiet_polls >= 3:  # quiet for a few seconds, not just for a moment
                return None
        else:
            quiet_polls = 0
    return state


def write_reports(result: ScenarioResult, report: Path | None, junit: Path | None) -> None:
    if report is not None:
        report.write_text(json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n",
                          encoding="utf-8")  # fmt: skip
    if junit is not None:
        result.to_junit().write(junit, encoding="utf-8", xml_declaration=True)
