"""Simulated fleets for CI: scenario files, the runner with its invariants, the reports, and
the pytest fixture other projects use."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from controller.scenarios.invariants import Check
from controller.scenarios.runner import ScenarioResult, write_reports
from controller.scenarios.spec import Scenario, ScenarioError, builtin_names, load
from controller.testing.pytest_plugin import RunScenario
from firmware_sim.faults import FaultKind

SMALL = """
name = "small-day"
lockers = 4
seed = 11
duration_s = 20
deposits_per_minute = 60
produce_share = 0.2
villagers_come_after_s = [1, 4]
villager_no_show = 0.0
villager_mistype = 0.2
heartbeat_s = 3

[[faults]]
at_s = 4
kind = "door_jam"
lockers = 1
duration_s = 10

[[outages]]
at_s = 8
duration_s = 4
"""


def test_builtin_scenarios_load() -> None:
    assert {"county-day", "broker-outage", "offline-village"} <= set(builtin_names())
    for name in builtin_names():
        scenario = load(name)
        assert scenario.name == name and scenario.lockers >= 1
    assert load("offline-village").faults[0].kind is FaultKind.NETWORK_DROP
    assert load("broker-outage").outages


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("name = ", "Invalid value"),
        ("lockers = 3", "missing 'name'"),
        ('name = "x"\n[[faults]]\nat_s = 1\nkind = "meteor"', "meteor"),
        ('name = "x"\nlockers = 0', "lockers must be"),
    ],
)
def test_bad_scenario_files_say_what_is_wrong(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=problem):
        load(str(path))
    with pytest.raises(ScenarioError, match="no scenario"):
        load(str(tmp_path / "missing.toml"))


def test_reports_have_one_test_case_per_invariant(tmp_path: Path) -> None:
    result = ScenarioResult(
        Scenario("demo"),
        [Check("good", True, "fine"), Check("bad", False, "2 parcels in one compartment")],
        {"deposit_201": 3},
        12.0,
    )
    write_reports(result, tmp_path / "r.json", tmp_path / "r.xml")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] is False and [c["name"] for c in report["checks"]] == ["good", "bad"]
    suite = ET.parse(tmp_path / "r.xml").getroot()  # noqa: S314 - our own report
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["bad"]


@pytest.mark.mqtt
@pytest.mark.slow
def test_a_small_day_with_a_jam_and_a_broker_outage_keeps_every_invariant(
    lockerfleet_scenario: RunScenario, tmp_path: Path
) -> None:
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    result = lockerfleet_scenario(str(path))
    failing = [f"{c.name}: {c.detail}" for c in result.checks if not c.ok]
    assert result.ok, failing
    assert len(result.checks) == 8
    assert result.counts.get("deposit_201", 0) > 5, "the traffic really deposited parcels"
    assert result.counts.get("fleet_pickup", 0) > 0, "villagers really picked parcels up"
