"""A PostgreSQL that is starting up (or shutting down) counts as unreachable.

While a restarted server recovers it refuses sessions with SQLSTATE 57P03
(``cannot_connect_now``), which SQLAlchemy's asyncpg dialect reports as a plain ``DBAPIError``,
the class of a bug in a statement. The engine must raise it as an outage, so that the ingest
retries instead of dropping the batch and the API answers 503 instead of 500.

The suite's PostgreSQL is shared and must not be restarted: a few lines of asyncio stand in for
one that is starting up, answering every session with that refusal, as PostgreSQL words it.
"""

from __future__ import annotations

import asyncio
import errno
import sqlite3
import struct
from collections.abc import AsyncIterator

import pytest
import sqlalchemy.exc
from sqlalchemy import text

from controller.db.engine import open_database
from controller.db.outage import DATABASE_DOWN, DatabaseUnavailable, is_outage, outage_cause

SSL_REQUEST = struct.pack("!II", 8, 80877103)


def refusal(sqlstate: str, message: str) -> bytes:
    """A FATAL ErrorResponse of the PostgreSQL wire protocol."""
    fields = [(b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message)]
    body = b"".join(tag + value.encode() + b"\0" for tag, value in fields) + b"\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body


async def starting_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        if await reader.readexactly(8) == SSL_REQUEST:
            writer.write(b"N")  # no TLS; the startup message follows
            length = struct.unpack("!I", await reader.readexactly(4))[0]
            await reader.readexactly(length - 4)
        writer.write(refusal("57P03", "the database system is starting up"))
        await writer.drain()
    finally:
        writer.close()


@pytest.fixture
async def restarting_server() -> AsyncIterator[str]:
    server = await asyncio.start_server(starting_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/test?schema=t"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_server_starting_up_is_an_outage(restarting_server: str) -> None:
    db = open_database(restarting_server)
    try:
        with pytest.raises(DATABASE_DOWN) as raised:
            async with db.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    finally:
        await db.dispose()
    assert isinstance(raised.value, DatabaseUnavailable)
    assert outage_cause(raised.value).endswith("the database system is starting up")


def _operational(message: str) -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError(message))


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), True),
        (TimeoutError(), True),
        (OSError(errno.ECONNRESET, "reset by peer"), True),
        (_operational("database is locked"), True),
        (sqlalchemy.exc.InterfaceError("SELECT 1", {}, Exception("connection is closed")), True),
        # The pool's own: every connection busy (stuck on a silent database) for its whole wait.
        (sqlalchemy.exc.TimeoutError("QueuePool limit of size 10 overflow 10 reached"), True),
        # Bugs and local trouble are not outages: they answer 500 and keep their traceback.
        (_operational("no such table: parcels"), False),
        (_operational('near "SELEC": syntax error'), False),
        (FileNotFoundError(errno.ENOENT, "sms-outbox.log"), False),
        (PermissionError(errno.EACCES, "denied"), False),
        (ValueError("bad"), False),
    ],
)
def test_only_an_unreachable_database_is_an_outage(error: BaseException, outage: bool) -> None:
    assert is_outage(error) is outage
