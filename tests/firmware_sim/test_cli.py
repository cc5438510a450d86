"""``locker-sim`` as a user runs it: a fleet with a report, and one clear line for mistakes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from controller.embedded_broker import MosquittoProcess
from firmware_sim.files import load_fleet
from protocol.urls import BrokerAddress


def locker_sim(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "firmware_sim.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("locker-sim: error: "), done.stderr
    assert fragment in lines[0] and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["fleet", "--broker", "http://example.org"], "must be mqtt://"),
        (["fleet", "--broker", "mqtt://127.0.0.1:1"], "cannot reach the MQTT broker"),
        (["fleet", "--broker", "mqtt://no-such-host.invalid"], "cannot find the MQTT broker"),
        (["fleet", "--fleet", "/nonexistent/fleet.toml"], "no such file"),
        (["serial", "--port", "/dev/ttyNOPE9", "--locker-id", "X-1"], "does not exist"),
        (["fleet", "--lockers", "0"], "--lockers must be at least 1"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_1(args: list[str], fragment: str) -> None:
    assert_one_line_error(locker_sim(*args), fragment)


@pytest.mark.mqtt
def test_a_broker_that_refuses_the_lockers_is_one_line() -> None:
    with MosquittoProcess(extra_config="allow_anonymous false\n") as broker:
        done = locker_sim("fleet", "--broker", f"mqtt://127.0.0.1:{broker.port}")
    assert_one_line_error(done, "refused locker SIM-00001")


@pytest.mark.mqtt
@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_a_timed_fleet_run_writes_its_report(
    mqtt_broker: BrokerAddress, topic_root: str, tmp_path: Path, processes: int
) -> None:
    report = tmp_path / "report.json"
    done = locker_sim(
        "fleet",
        "--broker",
        mqtt_broker.url(),
        "--lockers",
        "30",
        "--seed",
        "5",
        "--topic-root",
        topic_root,
        "--heartbeat",
        "1",
        "--duration",
        "3",
        "--processes",
        str(processes),
        "--report",
        str(report),
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(report.read_text())
    # Afterwards: every locker connected once, sent its birth and heartbeats, nothing failed.
    assert (data["lockers"], data["processes"], data["connacks"]) == (30, processes, 30)
    assert data["ever_connected"] == 30 and data["errors"] == 0
    assert data["messages_sent"] >= 30 * 3 and data["pubacks"] >= 30
    assert data["lockers_detail"]["telemetry"] >= 30
    assert "30 lockers" in done.stdout


def test_generate_prints_a_fleet_file_that_loads(tmp_path: Path) -> None:
    done = locker_sim("generate", "--lockers", "4", "--seed", "9", "--prefix", "HB-")
    assert done.returncode == 0
    path = tmp_path / "fleet.toml"
    path.write_text(done.stdout)
    assert [s.locker_id for s in load_fleet(path)] == [f"HB-0000{n}" for n in range(1, 5)]


@pytest.mark.mqtt
@pytest.mark.slow
def test_a_fault_plan_is_applied_and_counted_in_the_report(
    mqtt_broker: BrokerAddress, topic_root: str, tmp_path: Path
) -> None:
    faults = tmp_path / "faults.toml"
    faults.write_text(
        "seed = 3\n"
        '[[fault]]\nkind = "network_drop"\nat_s = 0.5\nduration_s = 1\ncount = 3\n'
        '[[fault]]\nkind = "reboot"\nat_s = 1\nlockers = ["SIM-00001"]\n'
        '[[fault]]\nkind = "serial_corruption"\nat_s = 1\nlockers = ["SIM-00002"]\n'
    )
    report = tmp_path / "report.json"
    done = locker_sim(
        "fleet", "--broker", mqtt_broker.url(), "--lockers", "10", "--topic-root", topic_root,
        "--duration", "4", "--faults", str(faults), "--report", str(report),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(report.read_text())
    # Afterwards: three drops and a reboot happened, and every locker came back.
    assert data["faults"] == {"network_drop": 3, "reboot": 1}
    assert data["faults_not_applicable"] == {"serial_corruption": 1}
    assert data["reconnects"] == 4 and data["connected"] == 10
    assert data["lockers_detail"]["boots"] == 11
