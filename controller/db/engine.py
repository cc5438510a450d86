"""Engines from the plain URLs users write.

``sqlite:///path.db`` becomes ``sqlite+aiosqlite``, ``postgresql://`` (or ``postgres://``)
becomes ``postgresql+asyncpg``. SQLite connections get WAL journaling, ``synchronous=FULL``
(NORMAL is not durable across a power cut; FULL costs nothing measurable once writes are
batched), foreign keys on, a busy timeout, and ``BEGIN IMMEDIATE`` so concurrent writers queue
for the lock instead of failing. A ``?schema=NAME`` query parameter on a
PostgreSQL URL sets the ``search_path`` (the test suite isolates itself that way). Every engine
raises a connection lost mid-statement as :class:`~controller.db.outage.DatabaseUnavailable`
(see :mod:`controller.db.outage`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from controller.db.outage import recognise_outages
from controller.db.session import Database


class DatabaseUrlError(ValueError):
    """The database URL is not one lockerfleet can use."""


@dataclass(frozen=True)
class Timeouts:
    """How long a PostgreSQL database may stay silent before the controller calls it gone.

    A database that goes away loudly (a refused connect, a closed socket) is noticed at once.
    A silent one (a network partition, a hung server, packets dropped by a firewall) answers
    nothing and closes nothing; without limits a request, an ingest batch or a connect would
    wait for the kernel to give up on TCP, many minutes later.

    * ``connect_s``: a new connection (TCP, TLS, authentication) must be ready within this.
    * ``statement_s``: every statement, BEGIN and COMMIT must answer within this; then the
      connection is thrown away (not returned to the pool) and the caller sees an outage
      (:func:`~controller.db.outage.is_outage`): the API answers 503, the ingest keeps the
      batch unacknowledged and retries.
    * ``idle_in_transaction_s``: set on the server (``idle_in_transaction_session_timeout``):
      a session that holds a transaction open and says nothing for this long is ended by
      PostgreSQL. A replica cut off in the middle of a transaction holds row locks (a
      locker's row, a compartment's); the other replicas wait on them only this long, which
      is shorter than their own statement timeout.

    0 turns a limit off: the driver's own connect timeout (60 s), no statement timeout, and no
    session setting sent (PgBouncer refuses startup parameters it does not know unless they
    are in its ``ignore_startup_parameters``).
    """

    connect_s: float = 10.0
    statement_s: float = 30.0
    idle_in_transaction_s: float = 20.0


def async_url(url: str, timeouts: Timeouts | None = None) -> tuple[URL, dict[str, Any]]:
    """Return the SQLAlchemy async URL for a user's URL, and extra connect arguments
    (``timeouts`` apply to PostgreSQL only; None: wait as long as the driver does).

    Raises :class:`DatabaseUrlError` with a message fit for the user.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    connect_args: dict[str, Any] = {}
    if scheme == "sqlite":
        return make_url("sqlite+aiosqlite" + url[len(parts.scheme) :]), connect_args
    if scheme in ("postgresql", "postgres"):
        query = dict(parse_qsl(parts.query))
        schema = query.pop("schema", None)
        server_settings: dict[str, str] = {}
        if schema:
            server_settings["search_path"] = schema
        if timeouts is not None:  # each limit at 0 is left out
            if timeouts.connect_s > 0:
                connect_args["timeout"] = timeouts.connect_s
            if timeouts.statement_s > 0:
                connect_args["command_timeout"] = timeouts.statement_s
            if timeouts.idle_in_transaction_s > 0:
                idle_ms = round(timeouts.idle_in_transaction_s * 1000)
                server_settings["idle_in_transaction_session_timeout"] = str(idle_ms)
        if server_settings:
            connect_args["server_settings"] = server_settings
        rebuilt = urlunsplit(("postgresql+asyncpg", parts.netloc, parts.path, urlencode(query), ""))
        return make_url(rebuilt), connect_args
    raise DatabaseUrlError(
        f"unsupported database URL {url!r}: use sqlite:///path.db or postgresql://user@host/db"
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" hook decide how transactions start (see _sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


READ_ONLY = "lockerfleet_read_only"


def _sqlite_begin(connection: Any) -> None:
    # Writers take the write lock at BEGIN: a deferred transaction that later writes fails at
    # once with SQLITE_BUSY when another connection wrote meanwhile; an immediate one waits its
    # turn. Readers begin deferred and never take it.
    read_only = connection.get_execution_options().get(READ_ONLY, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


PING_AFTER_IDLE_S = 30.0
"""A pooled PostgreSQL connection idle this long is pinged before it is used again."""


def _ping(dbapi_connection: Any) -> None:
    dbapi_connection.ping()


def _checked_in(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info["idle_since"] = time.monotonic()


def _check_before_use(
    dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    """Hand out only a live connection, without a round trip per checkout.

    SQLAlchemy's ``pool_pre_ping`` costs every transaction more round trips on asyncpg (a
    ``BEGIN`` and a ``ROLLBACK`` around its ping): about a tenth of the controller's round trips
    on the deposit path.
    A connection the server closed (a restart, ``pg_terminate_backend``) is already marked
    closed by asyncpg, which saw the socket end on the event loop; only one idle long enough
    for something silent in between (a firewall's idle timeout) is pinged. Raising
    ``DisconnectionError`` makes the pool replace the connection and try again.

    Behind something that keeps the client side of a dead connection open (PgBouncer, a TCP
    proxy), a connection used within the last 30 s is not checked: its first statement fails
    once (an ingest retry, or a 503) and the pool is then renewed.
    """
    driver = record.driver_connection
    if driver is not None and driver.is_closed():
        raise sqlalchemy.exc.DisconnectionError("the server closed this connection")
    idle_since = record.info.get("idle_since")
    if idle_since is not None and time.monotonic() - idle_since > PING_AFTER_IDLE_S:
        try:
            _ping(dbapi_connection)
        except Exception as exc:
            raise sqlalchemy.exc.DisconnectionError(f"ping failed: {exc}") from exc


def create_engine(
    url: str, *, echo: bool = False, timeouts: Timeouts | None = Timeouts()
) -> AsyncEngine:
    """Return an async engine for a user's database URL (see :class:`Timeouts`)."""
    sa_url, connect_args = async_url(url, timeouts)
    kwargs: dict[str, Any] = {"echo": echo, "connect_args": connect_args}
    if sa_url.get_backend_name() == "postgresql":
        kwargs.update(pool_size=10, max_overflow=10)
    engine = create_async_engine(sa_url, **kwargs)
    recognise_outages(engine)
    if sa_url.get_backend_name() == "postgresql":
        event.listen(engine.sync_engine, "checkin", _checked_in)
        event.listen(engine.sync_engine, "checkout", _check_before_use)
    if sa_url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


def open_database(
    url: str, *, echo: bool = False, timeouts: Timeouts | None = Timeouts()
) -> Database:
    """Return a :class:`Database` (engine + session factory) for a user's URL.

    ``timeouts=None`` waits on a silent PostgreSQL as long as the driver does (schema
    migrations, whose statements may rightly take long on a big database)."""
    engine = create_engine(url, echo=echo, timeouts=timeouts)
    reading = engine.execution_options(**{READ_ONLY: True})
    return Database(
        engine,
        async_sessionmaker(engine, expire_on_commit=False),
        async_sessionmaker(reading, expire_on_commit=False),
    )
