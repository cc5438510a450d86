"""The database handle the services use: an engine, session factories, the dialect name.

``sessions`` is for work that writes (on SQLite its transactions begin ``IMMEDIATE``, taking
the write lock up front); ``reader`` is for work that only reads (a plain deferred ``BEGIN``,
so reads never wait for, or block, writers). On PostgreSQL the two behave the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker


@dataclass(frozen=True)
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    reader: async_sessionmaker[AsyncSession]

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    async def dispose(self) -> None:
        await self.engine.dispose()
