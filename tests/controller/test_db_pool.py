"""The PostgreSQL pool hands out live connections without a ping per checkout
(controller/db/engine.py, ``_check_before_use``).

Against the real server: connections the server closed while they sat in the pool (what a
restart or ``pg_terminate_backend`` does) are replaced before use, so the next transactions
succeed. A connection idle past ``PING_AFTER_IDLE_S`` is pinged first; a busy one is not.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from controller.db import engine as engine_module
from controller.db.engine import open_database


@pytest.fixture
def pg_url(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL pool")
    return database_url


async def backend_pids(db: object, count: int) -> list[int]:
    """Check out ``count`` connections at once; their server process ids."""
    engine = db.engine  # type: ignore[attr-defined]
    connections = [await engine.connect() for _ in range(count)]
    try:
        return [
            int((await c.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            for c in connections
        ]
    finally:
        for c in connections:
            await c.close()


async def test_connections_the_server_closed_are_replaced_before_use(pg_url: str) -> None:
    db = open_database(pg_url)
    admin = open_database(pg_url)
    try:
        pooled = await backend_pids(db, 3)
        async with admin.engine.begin() as connection:
            for pid in pooled:
                await connection.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        await asyncio.sleep(0.2)  # the event loop sees each socket end
        # Every transaction after the restart-like event succeeds, on new server processes.
        after = await backend_pids(db, 3)
        assert not set(after) & set(pooled)
        async with db.sessions.begin() as session:
            assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await db.dispose()
        await admin.dispose()


async def test_only_a_connection_idle_past_the_limit_is_pinged(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = open_database(pg_url)
    pings: list[None] = []
    real_ping = engine_module._ping

    def counting_ping(dbapi_connection: object) -> None:
        pings.append(None)
        real_ping(dbapi_connection)

    monkeypatch.setattr(engine_module, "_ping", counting_ping)
    try:
        await backend_pids(db, 1)  # one connection, now idle in the pool
        await backend_pids(db, 1)
        assert pings == [], "a connection just used is not pinged"
        monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_S", 0.0)
        await asyncio.sleep(0.01)
        await backend_pids(db, 1)
        assert pings == [None], "one idle past the limit is pinged once before use"
    finally:
        await db.dispose()


async def test_a_connection_whose_ping_fails_is_replaced_before_use(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a line gone silent while idle looks like: the ping fails, the pool opens a new
    connection, and the transaction runs on it."""
    db = open_database(pg_url)

    def failing_ping(dbapi_connection: object) -> None:
        raise OSError("no answer")

    try:
        (before,) = await backend_pids(db, 1)
        monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_S", 0.0)
        monkeypatch.setattr(engine_module, "_ping", failing_ping)
        await asyncio.sleep(0.01)
        (after,) = await backend_pids(db, 1)
        assert after != before, "a new server process: the silent connection was dropped"
    finally:
        await db.dispose()
