"""``Idempotency-Key`` for state-changing routes (see :mod:`controller.services.idempotency`)."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from controller.domain.errors import InvalidRequest
from controller.runtime import Runtime
from controller.services.context import Actor
from controller.services.idempotency import IdempotencyStore, StoredResponse


async def run_once(
    runtime: Runtime,
    actor: Actor,
    request: Request,
    key: str | None,
    work: Callable[[], Awaitable[tuple[int, Any]]],
) -> JSONResponse:
    """Run ``work`` (returning status and body) at most once per ``key``."""
    if key is None:
        status, body = await work()
        return JSONResponse(jsonable_encoder(body), status)
    if not 1 <= len(key) <= 100:
        raise InvalidRequest("Idempotency-Key must be 1-100 characters")
    digest = hashlib.sha256(
        request.method.encode() + b" " + request.url.path.encode() + b"\n" + await request.body()
    ).hexdigest()
    store = IdempotencyStore(runtime.ctx)
    stored = await store.lookup(actor.user_id, key, digest)
    replayed = stored is not None
    if stored is None:
        status, body = await work()
        stored = await store.store(
            actor.user_id, key, method=request.method, path=request.url.path,
            request_hash=digest, response=StoredResponse(status, jsonable_encoder(body)),
        )  # fmt: skip
    headers = {"Idempotent-Replay": "true"} if replayed else None
    return JSONResponse(stored.body, stored.status_code, headers=headers)
