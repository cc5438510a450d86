"""The limits a controller puts on a silent PostgreSQL (``controller.db.engine.Timeouts``), from
the settings to the session the server runs. What a silent database then does to a running
controller is in ``test_database_outage.py``."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from controller.db.engine import Timeouts, async_url
from controller.runtime import build_runtime
from tests.controller.conftest import controller_settings


def test_postgresql_connections_get_the_three_limits_and_keep_their_schema() -> None:
    url, connect_args = async_url(
        "postgresql://lf@127.0.0.1:5432/lf?schema=county",
        Timeouts(connect_s=3, statement_s=7.5, idle_in_transaction_s=45),
    )
    assert url.drivername == "postgresql+asyncpg"
    assert connect_args == {
        "timeout": 3,
        "command_timeout": 7.5,
        "server_settings": {
            "search_path": "county",
            "idle_in_transaction_session_timeout": "45000",
        },
    }


def test_without_limits_the_driver_waits_as_it_always_did() -> None:
    """``lockerfleet db upgrade``: a migration may rightly run long."""
    assert async_url("postgresql://lf@127.0.0.1/lf", None)[1] == {}
    assert async_url("postgresql://lf@127.0.0.1/lf?schema=s", None)[1] == {
        "server_settings": {"search_path": "s"}
    }


def test_a_limit_of_zero_is_off() -> None:
    """For PgBouncer, which refuses startup parameters it does not know (unless told to ignore
    them): no ``idle_in_transaction_session_timeout`` is sent."""
    assert async_url("postgresql://lf@127.0.0.1/lf", Timeouts(0, 0, 0))[1] == {}
    assert async_url("postgresql://lf@127.0.0.1/lf", Timeouts(5, 0, 0))[1] == {"timeout": 5}


def test_sqlite_takes_none_of_them() -> None:
    """A file inside the process does not go silent over a network."""
    assert async_url("sqlite:///lf.db", Timeouts())[1] == {}


async def test_the_server_applies_the_settings_idle_in_transaction_limit(
    migrated_url: str, topic_root: str
) -> None:
    if not migrated_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL session setting")
    settings = controller_settings(migrated_url, topic_root).model_copy(
        update={"database_idle_in_transaction_timeout_s": 12.5}
    )
    runtime = build_runtime(settings)
    try:
        async with runtime.db.engine.connect() as connection:
            shown = await connection.scalar(text("SHOW idle_in_transaction_session_timeout"))
            path = await connection.scalar(text("SHOW search_path"))
    finally:
        await runtime.stop()
    assert shown == "12500ms"
    assert path == migrated_url.rsplit("schema=", 1)[1], "the test's own schema kept"
