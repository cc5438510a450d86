"""Running the Alembic migrations from code (``lockerfleet db upgrade``, the demo, tests).

Alembic is configured programmatically, so no ``alembic.ini`` is needed; the migration scripts
ship inside the ``migrations`` package.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

import controller
from controller.db.session import Database

MIGRATIONS = Path(controller.__file__).resolve().parent.parent / "migrations"
"""The migration scripts: the ``migrations`` directory beside the ``controller`` package (in a
source checkout and in an installed wheel alike)."""


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema of ``db`` up to ``revision`` (default: the newest)."""

    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with db.engine.begin() as connection:
        await connection.run_sync(run)


async def current_revision(db: Database) -> str | None:
    """Return the revision the schema of ``db`` is at, or None if it has none."""

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with db.engine.connect() as connection:
        return await connection.run_sync(read)
