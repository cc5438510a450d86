"""The lockerfleet command as a user runs it: migrate, create the first admin, serve; and one
clear line (no traceback) for the mistakes users make."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from controller.embedded_broker import free_port
from controller.fleet_file import fleet_file
from controller.runtime import Runtime
from controller.testing.seed import DEFAULT_LAYOUT, Seeded
from firmware_sim.files import load_fleet
from protocol.urls import BrokerAddress

SECRET = "x" * 16 + "y" * 16 + "z" * 8


def lockerfleet(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", *args], capture_output=True, text=True,
        env=env, cwd=cwd, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOCKERFLEET_")}
    return {**clean, "LOCKERFLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'lf.db'}"}


@pytest.mark.mqtt
def test_migrate_create_admin_and_serve(
    env: dict[str, str], tmp_path: Path, mqtt_broker: BrokerAddress
) -> None:
    env = {**env, "LOCKERFLEET_SECRET_KEY": SECRET,
           "LOCKERFLEET_MQTT_URL": mqtt_broker.url(with_password=True)}  # fmt: skip
    upgraded = lockerfleet("db", "upgrade", env=env, cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "-> " in upgraded.stdout
    created = lockerfleet("user", "create", "--name", "root", "--role", "admin", "--token",
                          env=env, cwd=tmp_path)  # fmt: skip
    assert created.returncode == 0, created.stderr
    token = re.search(r"(lf_\S+)", created.stdout)
    assert token is not None
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "controller.cli", "serve", "--port", str(port)],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        ready = None
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.ConnectError:
                pass
            time.sleep(0.2)
        assert ready is not None and ready.status_code == 200, ready.text if ready else "no answer"
        sites = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/sites",
            headers={"Authorization": f"Bearer {token.group(1)}"},
        )
        assert sites.status_code == 200 and sites.json() == []
    finally:
        server.terminate()
        server.wait(timeout=20)


@pytest.mark.parametrize(
    ("args", "extra_env", "message"),
    [
        (["user", "create", "--name", "a", "--role", "admin"], {}, "LOCKERFLEET_SECRET_KEY"),
        (["db", "upgrade", "--database-url", "mysql://x/y"], {}, "unsupported database URL"),
        (["serve"], {"LOCKERFLEET_MQTT_URL": "http://nope"}, "mqtt:// or mqtts://"),
        (
            ["user", "create", "--name", "a", "--role", "admin"],
            {"LOCKERFLEET_SECRET_KEY": SECRET},
            "db upgrade",
        ),
        (["serve"], {"LOCKERFLEET_SECRET_KEY": "changeme"}, "at least 32 random characters"),
    ],
)
def test_user_mistakes_give_one_clear_line(
    env: dict[str, str], tmp_path: Path, args: list[str], extra_env: dict[str, str], message: str
) -> None:
    result = lockerfleet(*args, env={**env, **extra_env}, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


async def test_fleet_file_gives_the_simulator_the_registered_lockers(
    runtime: Runtime, seeded: Seeded, tmp_path: Path
) -> None:
    text, count = await fleet_file(runtime)
    assert count == len(seeded.lockers)
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    specs = {spec.locker_id: spec for spec in load_fleet(path)}
    for locker_id, issued in seeded.lockers.items():
        spec = specs[locker_id]
        assert spec.command_key.hex() == issued.command_key_hex
        assert spec.code_key.hex() == issued.code_key_hex
        assert spec.password == issued.mqtt_password
        assert [c.id for c in spec.compartments] == sorted(c.label for c in DEFAULT_LAYOUT)
