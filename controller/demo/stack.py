"""Everything of a simulated county on one machine: broker, database, controller, HTTP API and a
fleet of simulated lockers. The demo and the scenario runner both start one of these.

Order of start: broker → database schema (migrations) → county (sites, carriers, users with
tokens, lockers with credentials) → controller (bridge, background work, HTTP) → fleet (staggered
connects). :meth:`Stack.stop` undoes it in reverse and leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from controller.api.server import serve_http
from controller.db.migrate import upgrade
from controller.demo.broker import BrokerKind, RunningBroker, start_broker
from controller.demo.county import County, CountyPlan, build_county
from controller.keys import KeyRing
from controller.runtime import Runtime, build_runtime
from controller.services.notifications import SmsSender
from controller.settings import Settings
from controller.testing.fleet import locker_spec
from firmware_sim.fleet import FleetOptions, MqttFleet
from firmware_sim.people import AttendantPolicy
from firmware_sim.settings import Settings as FirmwareSettings

log = logging.getLogger("lockerfleet.demo")

CONTROLLER_USER = "lockerfleet-controller"


@dataclass
class StackOptions:
    plan: CountyPlan
    data_dir: Path
    database_url: str | None = None
    broker_url: str | None = None
    prefer_broker: BrokerKind | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    heartbeat_s: int = 30
    attendant: AttendantPolicy | None = field(default_factory=AttendantPolicy)
    seed: int = 1
    settings_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Stack:
    options: StackOptions
    broker: RunningBroker | None = None
    runtime: Runtime | None = None
    county: County | None = None
    fleet: MqttFleet | None = None
    base_url: str = ""
    _http: contextlib.AbstractAsyncContextManager[str] | None = None

    @property
    def database_url(self) -> str:
        return self.options.database_url or f"sqlite:///{self.options.data_dir / 'lockerfleet.db'}"

    async def start(self, sender: Callable[[Stack], SmsSender] | None = None) -> None:
        """Start everything; :meth:`stop` is safe to call even if this fails half-way."""
        opts = self.options
        opts.data_dir.mkdir(parents=True, exist_ok=True)
        if opts.database_url is None:
            for suffix in ("", "-wal", "-shm"):  # a demo starts from a clean slate
                (opts.data_dir / f"lockerfleet.db{suffix}").unlink(missing_ok=True)
        settings = Settings(
            environment="demo", database_url=self.database_url, instance_id="demo-controller",
            **opts.settings_overrides,
        )  # fmt: skip
        keys = KeyRing(settings.master_secret)
        controller_password = keys.mqtt_password(CONTROLLER_USER, 1)
        credentials = {CONTROLLER_USER: controller_password}
        credentials |= {
            lk.locker_id: keys.mqtt_password(lk.locker_id, 1) for lk in opts.plan.lockers
        }
        self.broker = await start_broker(
            opts.broker_url, credentials=credentials, prefer=opts.prefer_broker
        )
        address = self.broker.address
        if self.broker.kind != "external":
            address = type(address)(
                address.host, address.port, CONTROLLER_USER, controller_password
            )
        update: dict[str, Any] = {"mqtt_url": address.url(with_password=True)}
        if self.broker.kind == "amqtt":
            update["share_group"] = None  # amqtt has no shared subscriptions
        settings = settings.model_copy(update=update)
        self.runtime = build_runtime(settings, sender=sender(self) if sender else None)
        await upgrade(self.runtime.db)
        self.county = await build_county(self.runtime, opts.plan)
        self._http = serve_http(self.runtime, host=opts.host, port=opts.port, start=True)
        self.base_url = await self._http.__aenter__()
        fragile = self.broker.fragile
        fleet_options = FleetOptions(
            topic_root=settings.topic_root,
            keepalive_s=30,
            connect_window=1 if fragile else 64,
            connect_interval_ms=25 if fragile else 0,
            settings=FirmwareSettings(heartbeat_s=opts.heartbeat_s),
            attendant=opts.attendant,
            seed=opts.seed,
        )
        specs = [locker_spec(self.county.lockers[lk.locker_id], lk.compartments)
                 for lk in opts.plan.lockers]  # fmt: skip
        self.fleet = MqttFleet(specs, self.broker.address, fleet_options)
        await asyncio.to_thread(self.fleet.start)

    async def wait_ready(self, within: float = 120.0) -> bool:
        """Wait until /readyz answers 200 and every locker is online in the controller."""
        assert self.runtime is not None
        deadline = asyncio.get_running_loop().time() + within
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            while asyncio.get_running_loop().time() < deadline:
                ready = (await client.get("/readyz")).status_code == 200
                if ready and await self.lockers_online() == len(self.options.plan.lockers):
                    return True
                await asyncio.sleep(0.25)
        return False

    async def lockers_online(self) -> int:
        """How many lockers are online and have sent their birth."""
        from sqlalchemy import func, select

        from controller.db.models import Locker

        assert self.runtime is not None
        async with self.runtime.db.reader() as session:
            count = await session.scalar(
                select(func.count(Locker.id)).where(Locker.online, Locker.status == "active")
            )
        return int(count or 0)

    async def stop(self) -> None:
        """Stop the fleet, the controller, the HTTP server and the broker (in that order)."""
        if self.fleet is not None:
            await asyncio.to_thread(self.fleet.stop)
            self.fleet = None
        if self._http is not None:
            await self._http.__aexit__(None, None, None)
            self._http = None
        if self.runtime is not None:
            await self.runtime.stop()
            self.runtime = None
        if self.broker is not None:
            await self.broker.stop()
            self.broker = None
