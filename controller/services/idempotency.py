"""Stored responses of state-changing API calls made with an ``Idempotency-Key``.

A retry with the same key and the same request gets the stored response without doing the
work again; the same key with a different request is refused. Records are per user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError

from controller.db.models import IdempotencyRecord
from controller.domain.errors import Conflict
from controller.services.context import Context


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: dict[str, Any]


class IdempotencyStore:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def lookup(self, user_id: int, key: str, request_hash: str) -> StoredResponse | None:
        """Return the stored response for ``key``, or None. Raises :class:`Conflict` if the key
        was used for a different request."""
        async with self.ctx.db.reader() as session:
            row = await session.get(IdempotencyRecord, (user_id, key))
            if row is None:
                return None
            if row.request_hash != request_hash:
                raise Conflict(
                    "this Idempotency-Key was used for a different request",
                    code="idempotency_key_reused",
                )
            return StoredResponse(row.status_code, row.body)

    async def store(
        self, user_id: int, key: str, *, method: str, path: str, request_hash: str,
        response: StoredResponse,
    ) -> StoredResponse:  # fmt: skip
        """Keep ``response`` for ``key``; if a concurrent call stored one first, return that."""
        async with self.ctx.db.sessions.begin() as session:
            try:
                async with session.begin_nested():
                    session.add(
                        IdempotencyRecord(
                            user_id=user_id, key=key, method=method, path=path,
                            request_hash=request_hash, status_code=response.status_code,
                            body=response.body, created_at=self.ctx.clock.now(),
                        )
                    )  # fmt: skip
                return response
            except IntegrityError:
                row = await session.get(IdempotencyRecord, (user_id, key))
                assert row is not None
                return StoredResponse(row.status_code, row.body)
