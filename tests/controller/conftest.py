"""Fixtures of the controller tests: real databases (SQLite always, PostgreSQL when
``LOCKERFLEET_TEST_DATABASE_URL`` is set, each test in a schema of its own), a runtime wired
to them, and a seeded county."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from controller.api.app import create_app
from controller.clock import ManualClock
from controller.db.engine import open_database
from controller.db.migrate import upgrade
from controller.runtime import Runtime, build_runtime
from controller.settings import Settings
from controller.testing.seed import Seeded, seed_county
from protocol.urls import BrokerAddress
from tests.controller.support import LAYOUT, RecordingSender, ScriptedLocker

PG_ENV = "LOCKERFLEET_TEST_DATABASE_URL"


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database: a SQLite file, or a PostgreSQL schema of this test's own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lockerfleet.db'}"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"set {PG_ENV} to run the database tests on PostgreSQL too")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = open_database(base)
    async with admin.engine.begin() as connection:
        await connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{base}?schema={schema}"
    finally:
        async with admin.engine.begin() as connection:
            await connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        await admin.dispose()


@pytest.fixture
async def migrated_url(database_url: str) -> str:
    db = open_database(database_url)
    await upgrade(db)
    await db.dispose()
    return database_url


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sms() -> RecordingSender:
    return RecordingSender()


def controller_settings(
    database_url: str, topic_root: str, broker: BrokerAddress | None = None
) -> Settings:
    return Settings(
        environment="test",
        database_url=database_url,
        mqtt_url=broker.url(with_password=True) if broker else "mqtt://127.0.0.1:1",
        topic_root=topic_root,
        instance_id=f"test-{uuid.uuid4().hex[:8]}",
        background_interval_s=0.1,
        command_retry_initial_s=0.5,
        ingest_batch_wait_ms=5,
    )


@pytest.fixture
async def runtime(
    migrated_url: str, topic_root: str, clock: ManualClock, sms: RecordingSender
) -> AsyncIterator[Runtime]:
    """A runtime on a migrated database with a manual clock; nothing started (no broker)."""
    rt = build_runtime(controller_settings(migrated_url, topic_root), clock=clock, sender=sms)
    try:
        yield rt
    finally:
        await rt.stop()


@pytest.fixture
async def seeded(runtime: Runtime) -> Seeded:
    return await seed_county(runtime, lockers=2, prefix=f"L{uuid.uuid4().hex[:6]}")


@pytest.fixture
async def locker(runtime: Runtime, seeded: Seeded) -> ScriptedLocker:
    """The first seeded locker, online with the test layout (a scripted locker, no broker)."""
    scripted = ScriptedLocker(runtime, next(iter(seeded.lockers)))
    await scripted.come_online(LAYOUT)
    return scripted


@pytest.fixture
async def api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The runtime's HTTP API in process (ASGI), nothing started; a module may define its own
    ``api`` (e.g. served over real HTTP)."""
    transport = httpx.ASGITransport(app=create_app(runtime=runtime, start=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client
