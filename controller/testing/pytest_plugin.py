"""A pytest plugin (installed with lockerfleet) so a project's own tests can run a simulated
fleet against a real controller and assert on the invariants.

::

    def test_my_integration(lockerfleet_scenario):
        result = lockerfleet_scenario("offline-village", lockers=4)
        assert result.ok, [c for c in result.checks if not c.ok]

The fixture takes a built-in scenario name, a TOML path or a
:class:`~controller.scenarios.spec.Scenario`; it starts its own Mosquitto (or uses the broker at
``LOCKERFLEET_TEST_MQTT_URL``) and a fresh SQLite database in the test's temporary directory.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.scenarios.runner import ScenarioResult, run_scenario
from controller.scenarios.spec import Scenario, load

RunScenario = Callable[..., ScenarioResult]


@pytest.fixture
def lockerfleet_scenario(tmp_path: Path) -> RunScenario:
    """Return a function that runs a scenario and gives back its :class:`ScenarioResult`."""

    def run(
        scenario: str | Scenario, *, lockers: int | None = None, seed: int | None = None
    ) -> ScenarioResult:
        chosen = load(scenario) if isinstance(scenario, str) else scenario
        chosen = chosen.with_overrides(lockers=lockers, seed=seed)
        return asyncio.run(
            run_scenario(
                chosen,
                data_dir=tmp_path / "scenario",
                broker_url=os.environ.get("LOCKERFLEET_TEST_MQTT_URL"),
            )
        )

    return run
