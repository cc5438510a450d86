"""Wiring: build the services from settings, and run the background work of one replica.

:class:`Runtime` owns the database handle, the MQTT bridge, the provisioning desk (answers to
unprovisioned lockers, on a connection of its own) and the background loops (SMS outbox,
housekeeping). The HTTP app starts it in its lifespan; the demo, the scenario runner
and the tests start it the same way. Nothing is built at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from controller.clock import Clock, SystemClock
from controller.db.engine import open_database
from controller.db.outage import OutageNotice, is_outage
from controller.db.session import Database
from controller.keys import KeyRing
from controller.mqtt.bridge import MqttBridge
from controller.mqtt.provisioning import ProvisioningDesk
from controller.services.admin import AdminService
from controller.services.agents import AgentService
from controller.services.command_views import CommandQueries
from controller.services.config_shadow import ConfigShadow
from controller.services.context import Context
from controller.services.deposits import DepositService
from controller.services.health import HealthService
from controller.services.housekeeping import Housekeeping
from controller.services.inventory import Inventory
from controller.services.lockers import LockerService
from controller.services.notifications import (
    FileSender,
    LogSender,
    NotificationDispatcher,
    SmsSender,
)
from controller.services.open_guard import OpenDefence
from controller.services.provisioning import ProvisioningService
from controller.services.rotation import CredentialRotation
from controller.settings import Settings
from protocol.topics import TopicLayout
from protocol.urls import parse_broker_url

log = logging.getLogger("lockerfleet.runtime")

PRUNE_EVERY_ROUNDS = 300


@dataclass
class Services:
    """The use cases, as the API and the CLI call them."""

    deposits: DepositService
    agents: AgentService
    lockers: LockerService
    admin: AdminService
    commands: CommandQueries
    housekeeping: Housekeeping
    health: HealthService
    defence: OpenDefence
    provisioning: ProvisioningService
    config: ConfigShadow
    inventory: Inventory
    rotation: CredentialRotation


@dataclass
class Runtime:
    settings: Settings
    ctx: Context
    services: Services
    bridge: MqttBridge | None
    notifier: NotificationDispatcher
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    provisioning: ProvisioningDesk | None = None
    """Answers unprovisioned lockers on the provisioning topics (its own MQTT connection)."""

    @property
    def db(self) -> Database:
        return self.ctx.db

    async def start(self, *, mqtt: bool = True) -> None:
        """Start the bridge and the background loops (idempotent)."""
        if self.tasks:
            return
        if mqtt and self.bridge is not None:
            self.tasks.append(asyncio.create_task(self.bridge.run(), name="mqtt-bridge"))
        if mqtt and self.provisioning is not None:
            self.tasks.append(asyncio.create_task(self._provisioning(), name="mqtt-provisioning"))
        self.tasks.append(asyncio.create_task(self._background(), name="background"))

    async def _provisioning(self) -> None:
        """Answer provisioning requests, once the bridge is subscribed: lockers coming online
        must not lose their first births to a connect that can wait."""
        assert self.provisioning is not None
        # The bridge exposes a flag, not an event (and is not ours to change).
        while self.bridge is not None and not self.bridge.stats.connected:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await self.provisioning.run()

    async def _background(self) -> None:
        """Run the periodic jobs forever. A failing job is logged and tried again next round;
        while the database is unreachable, the rounds are skipped with one line for the whole
        outage (see :class:`OutageNotice`) rather than a traceback per job and round."""
        interval = self.settings.background_interval_s
        outage = OutageNotice(log, "background work")
        rounds = 0
        while True:
            jobs: list[tuple[str, Callable[[], Awaitable[object]]]] = [
                ("notifications", self.notifier.run_once),
                ("housekeeping", self.services.housekeeping.run_once),
                ("presence watchdog", self.services.health.watch_presence),
            ]
            if rounds % PRUNE_EVERY_ROUNDS == 0:
                jobs.append(("open counters", self.services.defence.prune_counters))
            for name, job in jobs:
                try:
                    await job()
                except Exception as exc:
                    if not is_outage(exc):
                        log.exception("%s round failed", name)
                        continue
                    outage.began(exc)
                    break  # the other jobs need the database too
                outage.ended()
            rounds += 1
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        """Stop the background work and close the database. Safe to call twice."""
        if self.bridge is not None:
            await self.bridge.publish_offline()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.tasks.clear()
        await self.db.dispose()


def tune_gc() -> None:
    """Collect garbage less often: a replica allocates thousands of short-lived ORM rows and
    protocol objects a second, and the default threshold (700 allocations) runs a collection
    every few hundred microseconds, which cProfile showed taking a third of the ingest's time.
    Objects alive at start-up (modules, settings) are moved out of the collector's way."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)


def sms_sender(settings: Settings) -> SmsSender:
    if settings.sms_sender == "file":
        return FileSender(Path(settings.sms_file))
    return LogSender()


def build_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    sender: SmsSender | None = None,
    database: Database | None = None,
) -> Runtime:
    """Build (but do not start) everything one controller replica needs."""
    db = database or open_database(settings.database_url, timeouts=settings.database_timeouts)
    ctx = Context(
        db=db,
        settings=settings,
        keys=KeyRing(settings.master_secret),
        clock=clock or SystemClock(),
        topics=TopicLayout(settings.topic_root),
    )
    bridge = MqttBridge(ctx, parse_broker_url(settings.mqtt_url))
    ctx.wake_dispatcher = bridge.wake
    ctx.publisher = bridge
    services = Services(
        deposits=DepositService(ctx),
        agents=AgentService(ctx),
        lockers=LockerService(ctx),
        admin=AdminService(ctx),
        commands=CommandQueries(ctx),
        housekeeping=Housekeeping(ctx),
        health=HealthService(ctx),
        defence=OpenDefence(ctx),
        provisioning=ProvisioningService(ctx),
        config=ConfigShadow(ctx),
        inventory=Inventory(ctx),
        rotation=CredentialRotation(ctx),
    )
    notifier = NotificationDispatcher(ctx, sender or sms_sender(settings))
    provisioning = ProvisioningDesk(ctx, services.provisioning, bridge.address)
    return Runtime(settings, ctx, services, bridge, notifier, provisioning=provisioning)
