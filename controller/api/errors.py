"""Domain errors → HTTP: one JSON shape, ``{"error": {"code", "message", ...}}``, for every
failure, with a stable machine code and a message for people.

An unreachable database (:func:`controller.db.outage.is_outage`) is nobody's mistake and
passes: it answers ``503 database_unavailable`` with a ``Retry-After``, so that a courier's
handheld or an agent's app tries again instead of reporting a bug, and is logged as one line.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from controller.db.outage import is_outage, outage_cause
from controller.domain.errors import (
    Conflict,
    DomainError,
    FleetLockedDown,
    InvalidRequest,
    LockedOut,
    NotAllowed,
    NotFound,
    OpenLimitExceeded,
    RateLimited,
    WrongCode,
)
from controller.domain.states import IllegalTransition

log = logging.getLogger("lockerfleet.api")

DATABASE_RETRY_AFTER_S = 5
"""How long a client is asked to wait after a 503 ``database_unavailable``: a restarted
PostgreSQL takes seconds, and every request tries a fresh connection."""

STATUS: list[tuple[type[Exception], int]] = [
    (FleetLockedDown, 423),
    (OpenLimitExceeded, 429),
    (NotFound, 404),
    (NotAllowed, 403),
    (WrongCode, 403),
    (LockedOut, 429),
    (RateLimited, 429),
    (InvalidRequest, 422),
    (Conflict, 409),
    (DomainError, 400),
]


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def _status_of(exc: Exception) -> int:
    return next(status for cls, status in STATUS if isinstance(exc, cls))


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    extra: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if isinstance(exc, LockedOut | RateLimited | OpenLimitExceeded):
        extra["retry_after_s"] = exc.retry_after_s
        headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, WrongCode):
        extra["attempts_left"] = exc.attempts_left
    return JSONResponse(error_body(exc.code, exc.message, **extra), _status_of(exc), headers)


async def _illegal_transition(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IllegalTransition)
    return JSONResponse(
        error_body("illegal_transition", str(exc), state=exc.state, event=exc.event), 409
    )


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "problem": e["msg"]}
        for e in exc.errors()
    ]
    text = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
    return JSONResponse(error_body("invalid_request", text, problems=problems), 422)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {401: "unauthenticated", 404: "not_found", 405: "method_not_allowed"}.get(
        exc.status_code, "http_error"
    )
    return JSONResponse(
        error_body(code, str(exc.detail)), exc.status_code, getattr(exc, "headers", None)
    )


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning(
        "database unavailable (%s): %s %s answered 503",
        outage_cause(exc), request.method, request.url.path,
    )  # fmt: skip
    body = error_body(
        "database_unavailable",
        "the controller cannot reach its database just now; "
        f"please try again in {DATABASE_RETRY_AFTER_S} seconds",
        retry_after_s=DATABASE_RETRY_AFTER_S,
    )
    return JSONResponse(body, 503, {"Retry-After": str(DATABASE_RETRY_AFTER_S)})


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(error_body("internal_error", "something went wrong on our side"), 500)


async def _database_or_unexpected(request: Request, exc: Exception) -> JSONResponse:
    """The exception types an outage comes as: 503 if it is one, else a 500 like any bug."""
    if is_outage(exc):
        return await _database_unavailable(request, exc)
    return await _unexpected(request, exc)


OUTAGE_TYPES: tuple[type[Exception], ...] = (
    sqlalchemy.exc.DBAPIError,
    sqlalchemy.exc.TimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)
"""What :func:`~controller.db.outage.is_outage` may say yes to; handled here rather than by
the catch-all, which Starlette re-raises after answering."""


def install(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(IllegalTransition, _illegal_transition)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    for kind in OUTAGE_TYPES:
        app.add_exception_handler(kind, _database_or_unexpected)
    app.add_exception_handler(Exception, _unexpected)
