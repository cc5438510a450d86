"""The demo works on each broker it may start (Mosquitto as a child process, amqtt in-process):
ready, lockers online, a deposit made through the API reaches the villager by SMS, the villager
picks it up at the keypad, and stopping leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from controller.db.models import Parcel
from controller.demo.broker import BrokerKind
from controller.demo.county import plan_county
from controller.demo.stack import Stack, StackOptions
from controller.demo.villagers import VillagerSender
from controller.embedded_broker import find_mosquitto
from controller.testing.waiting import eventually
from firmware_sim.people import AttendantPolicy, Delays

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


@pytest.mark.parametrize("kind", ["mosquitto", "amqtt"])
async def test_demo_stack_on_each_broker(tmp_path: Path, kind: BrokerKind) -> None:
    if kind == "mosquitto" and find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    stack = Stack(StackOptions(
        plan=plan_county(3, seed=5), data_dir=tmp_path, prefer_broker=kind, heartbeat_s=5,
        attendant=AttendantPolicy(delays=Delays.fast()),
    ))  # fmt: skip
    villagers = VillagerSender(
        stack,
        come_after_s=(0.2, 0.5),
        no_show=0,
        mistype=0,
        echo=False,
    )
    try:
        await stack.start(sender=lambda _s: villagers)
        assert stack.broker is not None and stack.broker.kind == kind
        assert await stack.wait_ready(within=60), "every locker online and /readyz 200"
        assert stack.county is not None
        locker_id = next(iter(stack.county.lockers))
        villagers.destinations["13900000077"] = locker_id
        async with httpx.AsyncClient(base_url=stack.base_url) as api:
            response = await api.post(
                "/api/v1/deposits",
                headers={"Authorization": f"Bearer {stack.county.tokens['courier-sf']}"},
                json={
                    "tracking_number": "SF7700000001",
                    "locker_id": locker_id,
                    "size": "M",
                    "recipient_phone": "13900000077",
                    "consent_method": "app",
                },
            )
            assert response.status_code == 201, response.text
        parcel_id = response.json()["parcel"]["id"]

        async def picked_up() -> bool:
            assert stack.runtime is not None
            async with stack.runtime.db.reader() as session:
                state = await session.scalar(select(Parcel.state).where(Parcel.id == parcel_id))
            return state == "picked_up"

        await eventually(picked_up, within=60, what="the villager picked the parcel up")
        assert villagers.counts["texts"] >= 1
        mosquitto = stack.broker._mosquitto
    finally:
        await villagers.close()
        await stack.stop()
    if kind == "mosquitto":
        assert mosquitto is not None and mosquitto.process is None, "the child broker is gone"


def test_demo_command_starts_prints_tokens_and_stops_on_sigint(tmp_path: Path) -> None:
    port = 18000 + os.getpid() % 1000
    process = subprocess.Popen(
        [sys.executable, "-m", "controller.cli", "demo", "--lockers", "3", "--port", str(port),
         "--data-dir", str(tmp_path), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    seen: list[str] = []
    for line in process.stdout:
        seen.append(line)
        if "Ctrl-C stops everything" in line:
            break
    ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
    assert ready.status_code == 200
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    output = "".join(seen) + rest
    assert process.returncode == 0, output
    assert "courier-sf" in output and "lf_" in output and "/api/v1/deposits" in output
    assert "stopped; nothing left running" in output
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
