"""alarms, fleet controls (lockdown), remote-open counters, provisioning tokens

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_ALARM = "state <> 'cleared'"


def upgrade() -> None:
    op.create_table(
        "alarms",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("locker_id", sa.String(length=64), nullable=False),
        sa.Column("compartment", sa.String(length=8), nullable=False),
        sa.Column("type", sa.String(length=24), nullable=False),
        sa.Column("severity", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("parcel_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by_user_id", sa.Integer(), nullable=True),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cleared_by_user_id", sa.Integer(), nullable=True),
        sa.Column("clear_reason", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms")),
    )
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alarms_locker_id"), ["locker_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_alarms_first_seen_at"), ["first_seen_at"], unique=False
        )
        batch_op.create_index("ix_alarms_state_severity", ["state", "severity"], unique=False)
        batch_op.create_index(
            "uq_alarms_open",
            ["locker_id", "compartment", "type"],
            unique=True,
            sqlite_where=sa.text(OPEN_ALARM),
            postgresql_where=sa.text(OPEN_ALARM),
        )

    fleet_controls = op.create_table(
        "fleet_controls",
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=300), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_by_user_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_fleet_controls")),
    )
    # The lockdown row exists from the start, so switching it and checking it always meet on
    # one row lock (an insert racing a check would not).
    op.bulk_insert(
        fleet_controls,
        [{"key": "lockdown", "enabled": False, "reason": None,
          "changed_at": datetime.now(UTC), "changed_by_user_id": None}],
    )  # fmt: skip
    op.create_table(
        "open_counters",
        sa.Column("scope", sa.String(length=40), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "window_start", name=op.f("pk_open_counters")),
    )
    op.create_table(
        "provisioning_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("locker_id", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by_user_id", sa.Integer(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["locker_id"], ["lockers.id"], name=op.f("fk_provisioning_tokens_locker_id_lockers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provisioning_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_provisioning_tokens_token_hash")),
    )
    with op.batch_alter_table("provisioning_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_provisioning_tokens_locker_id"), ["locker_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("provisioning_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_provisioning_tokens_locker_id"))
    op.drop_table("provisioning_tokens")
    op.drop_table("open_counters")
    op.drop_table("fleet_controls")
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_alarms_open",
            sqlite_where=sa.text(OPEN_ALARM),
            postgresql_where=sa.text(OPEN_ALARM),
        )
        batch_op.drop_index("ix_alarms_state_severity")
        batch_op.drop_index(batch_op.f("ix_alarms_first_seen_at"))
        batch_op.drop_index(batch_op.f("ix_alarms_locker_id"))
    op.drop_table("alarms")
