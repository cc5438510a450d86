"""What it means that the database is unreachable, rather than that a request or a message is
wrong: one notion for every caller, so that each can wait and retry instead of giving up.

The ingest retries a batch while the database is down, acknowledging nothing meanwhile (the
lockers keep what is not acknowledged); the API answers ``503 database_unavailable`` with a
``Retry-After``; provisioning answers ``unavailable``; the background loops skip a round.
Each decides by :data:`DATABASE_DOWN`.

A connection lost in the middle of a statement (the server restarted, the line was cut, the
session was terminated) reaches SQLAlchemy's asyncpg dialect as asyncpg's
``ConnectionDoesNotExistError``, which it reports as a plain ``DBAPIError``: the same class as a
bug in a statement. :func:`recognise_outages` makes an engine raise such failures as
:class:`DatabaseUnavailable` instead, an ``OperationalError``, so that one tuple of exception
types is the whole notion and an ``except DATABASE_DOWN`` catches them.
"""

from __future__ import annotations

import errno
import logging
import time

import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine

DATABASE_DOWN: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    ConnectionError,
    OSError,
)
"""Failures that mean the database is unreachable, not that a message or request is bad.
``OSError`` (and ``TimeoutError``, one of them) is what a refused or timed-out connect raises:
the driver's socket errors are not wrapped by SQLAlchemy. ``sqlalchemy.exc.TimeoutError`` is
the pool's: every connection busy for its whole wait (a database too slow or silent)."""

SERVER_GOING_AWAY = ("57P01", "57P02", "57P03")
"""SQLSTATEs of a server shutting down or starting up: admin_shutdown, crash_shutdown,
cannot_connect_now. Class ``08`` (connection exceptions) counts too."""


UNREACHABLE_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT,
        errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN,
    }
)  # fmt: skip


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached just now, for callers that must
    not mistake a bug for an outage (the API's 503, the background loops' one-line notice).

    Narrower than :data:`DATABASE_DOWN`, which the ingest uses to retry a batch (harmless if
    it retries a bug): a lost or refused connection, a connect that timed out, a server
    shutting down or starting up, a connection pool's own interface error, no connection free
    in the pool for its whole wait, or SQLite's "database is locked" after its busy timeout.
    Not a SQL error, a missing table or a file the process cannot open.
    """
    if isinstance(
        exc, DatabaseUnavailable | sqlalchemy.exc.InterfaceError | sqlalchemy.exc.TimeoutError
    ):
        return True
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
        if sqlstate.startswith("08") or sqlstate in SERVER_GOING_AWAY:
            return True
        return isinstance(exc, sqlalchemy.exc.OperationalError) and "database is locked" in str(
            exc.orig
        )
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return isinstance(exc, OSError) and exc.errno in UNREACHABLE_ERRNOS


class DatabaseUnavailable(sqlalchemy.exc.OperationalError):
    """The connection to the database was lost or refused by the server (reported by the
    driver as a generic database error)."""


def _lost_connection(context: ExceptionContext) -> BaseException | None:
    if (
        isinstance(context.original_exception, TimeoutError)
        and context.connection is not None  # a statement, BEGIN, COMMIT or ROLLBACK; not a connect
        and not context.is_pre_ping
    ):
        return _silent(context)
    error = context.sqlalchemy_exception
    if context.is_pre_ping or not isinstance(error, sqlalchemy.exc.DBAPIError):
        return None  # a pool's own ping (it reconnects by itself); or not a driver's error
    if error.orig is None:
        return None
    if isinstance(error, DATABASE_DOWN):
        return None
    sqlstate = str(getattr(context.original_exception, "sqlstate", None) or "")
    if not (context.is_disconnect or sqlstate.startswith("08") or sqlstate in SERVER_GOING_AWAY):
        return None
    return DatabaseUnavailable(
        error.statement,
        error.params,
        error.orig,
        hide_parameters=error.hide_parameters,
        connection_invalidated=context.is_disconnect,
    )


def _silent(context: ExceptionContext) -> BaseException:
    """A statement that got no answer in time (the driver's statement timeout, see
    :class:`~controller.db.engine.Timeouts`): the connection is thrown away rather than
    returned to the pool (a cancel may still be under way on it, or the line is dead), the
    rest of the pool is kept (each connection finds out for itself), and the caller sees an
    outage."""
    context.is_disconnect = True
    context.invalidate_pool_on_disconnect = False
    return DatabaseUnavailable(
        context.statement,
        context.parameters,
        TimeoutError("the database did not answer within the statement timeout"),
        hide_parameters=context.engine.hide_parameters if context.engine else False,
        connection_invalidated=True,
    )


def recognise_outages(engine: AsyncEngine) -> None:
    """Make ``engine`` raise a lost connection as :class:`DatabaseUnavailable`."""
    event.listen(engine.sync_engine, "handle_error", _lost_connection, retval=True)


def outage_cause(exc: BaseException) -> str:
    """One line naming what failed, for a log: the driver's error, without SQL or parameters."""
    cause: BaseException = exc
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
        cause = exc.orig.__cause__ or exc.orig  # the driver's own error behind the adapter's
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0]}"[:200] if text else type(cause).__name__


class OutageNotice:
    """Says once that a loop met an unreachable database, and once that it is back: an
    operator reads one warning per outage, not one traceback per round."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log = log
        self.what = what
        self.since: float | None = None

    def began(self, exc: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning(
                "database unavailable (%s): %s paused until it is back",
                outage_cause(exc), self.what,
            )  # fmt: skip

    def ended(self) -> None:
        if self.since is not None:
            self.log.info(
                "database reachable again after %.0f s: %s resumed",
                time.monotonic() - self.since, self.what,
            )  # fmt: skip
            self.since = None
