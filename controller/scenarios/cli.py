"""``lockerfleet scenario run NAME|FILE``: a simulated fleet for CI, with a pass/fail report."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from controller.scenarios.runner import run_scenario, write_reports
from controller.scenarios.spec import ScenarioError, builtin_names, load


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    scenario = sub.add_parser("scenario", help="run simulated fleets with checks, for CI")
    actions = scenario.add_subparsers(dest="scenario_command", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run",
        help="run a scenario and check its invariants",
        description="Run a built-in scenario (" + ", ".join(builtin_names()) + ") or a TOML "
        "file: start a broker (unless --broker), a database (unless --database-url) and the "
        "controller, run the fleet and simulated people against the real API and keypads, "
        "inject the faults, then check every invariant. Exit status 1 when any check fails.",
    )
    run.add_argument("scenario", help="built-in name or path of a TOML scenario file")
    run.add_argument("--lockers", type=int, help="override the scenario's number of lockers")
    run.add_argument("--seed", type=int, help="override the scenario's seed")
    run.add_argument("--report", type=Path, help="write the JSON report here")
    run.add_argument(
        "--junit", type=Path, help="write a JUnit XML report here (one test case per invariant)"
    )
    run.add_argument("--broker", help="attach to this broker instead of starting Mosquitto")
    run.add_argument("--database-url", help="use this database instead of a fresh SQLite file")
    run.add_argument("--data-dir", type=Path, help="where to keep the SQLite file (a temp dir)")
    run.set_defaults(run_async=_run)


async def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        scenario = load(args.scenario).with_overrides(lockers=args.lockers, seed=args.seed)
    except ScenarioError as exc:
        print(f"lockerfleet scenario: {exc}", file=sys.stderr)
        return 2
    print(f"scenario {scenario.name}: {scenario.lockers} lockers, seed {scenario.seed}, "
          f"{scenario.duration_s:.0f} s of traffic", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="lockerfleet-scenario-") as tmp:
        result = await run_scenario(
            scenario, data_dir=args.data_dir or Path(tmp), broker_url=args.broker,
            database_url=args.database_url,
        )  # fmt: skip
    write_reports(result, args.report, args.junit)
    for check in result.checks:
        print(f"  {'PASS' if check.ok else 'FAIL'}  {check.name}: {check.detail}")
    print(f"{'passed' if result.ok else 'FAILED'} in {result.seconds:.0f} s")
    return 0 if result.ok else 1
