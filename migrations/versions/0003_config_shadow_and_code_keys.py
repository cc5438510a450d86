"""configuration shadow (locker_configs), a code-key generation apart from the credentials'

Revision ID: 0003
Revises: 0002

Lockers registered before this revision keep the code key they have: ``code_key_generation``
starts equal to their ``key_generation``, so no pickup code in any locker's cache changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "lockers",
        sa.Column("code_key_generation", sa.Integer(), nullable=False, server_default="1"),
    )
    op.execute("UPDATE lockers SET code_key_generation = key_generation")
    op.create_table(
        "locker_configs",
        sa.Column("locker_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by_user_id", sa.Integer(), nullable=True),
        sa.Column("note", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["locker_id"], ["lockers.id"], name=op.f("fk_locker_configs_locker_id_lockers")
        ),
        sa.PrimaryKeyConstraint("locker_id", "version", name=op.f("pk_locker_configs")),
    )


def downgrade() -> None:
    op.drop_table("locker_configs")
    op.drop_column("lockers", "code_key_generation")  # SQLite >= 3.35 drops columns in place
