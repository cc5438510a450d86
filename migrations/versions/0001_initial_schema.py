"""initial schema

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


APPEND_ONLY = {
    "sqlite": [
        "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
        "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
        "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
        "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    ],
    "postgresql": [
        "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$",
        "CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
    ],
}


def _append_only_audit_log() -> None:
    """The audit log refuses UPDATE and DELETE at the database level."""
    for statement in APPEND_ONLY.get(op.get_bind().dialect.name, []):
        op.execute(statement)


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locker_id", sa.String(length=64), nullable=False),
        sa.Column("compartment", sa.String(length=8), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("cause", sa.String(length=24), nullable=True),
        sa.Column("actor_kind", sa.String(length=16), nullable=False),
        sa.Column("actor_user_id", sa.Integer(), nullable=True),
        sa.Column("parcel_id", sa.Integer(), nullable=True),
        sa.Column("command_id", sa.String(length=32), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_locker_id"), ["locker_id"], unique=False)

    op.create_table(
        "carriers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_carriers")),
        sa.UniqueConstraint("code", name=op.f("uq_carriers_code")),
    )
    op.create_table(
        "code_attempts",
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_code_attempts")),
    )
    op.create_table(
        "device_messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("locker_id", sa.String(length=64), nullable=False),
        sa.Column("boot_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_messages")),
        sa.UniqueConstraint(
            "locker_id", "boot_id", "seq", name=op.f("uq_device_messages_locker_id_boot_id_seq")
        ),
    )
    op.create_table(
        "sites",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("division_code", sa.String(length=12), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["parent_id"], ["sites.id"], name=op.f("fk_sites_parent_id_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sites")),
        sa.UniqueConstraint("division_code", name=op.f("uq_sites_division_code")),
    )
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sites_parent_id"), ["parent_id"], unique=False)

    op.create_table(
        "lockers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=300), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("key_generation", sa.Integer(), nullable=False),
        sa.Column("firmware", sa.String(length=40), nullable=True),
        sa.Column("model", sa.String(length=64), nullable=True),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("presence_boot_id", sa.BigInteger(), nullable=False),
        sa.Column("presence_connection", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("offline_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_telemetry", sa.JSON(), nullable=True),
        sa.Column("boot_id", sa.BigInteger(), nullable=False),
        sa.Column("birth_seq", sa.BigInteger(), nullable=False),
        sa.Column("stream_boot_id", sa.BigInteger(), nullable=False),
        sa.Column("stream_high", sa.BigInteger(), nullable=False),
        sa.Column("stream_count", sa.BigInteger(), nullable=False),
        sa.Column("stream_skipped", sa.BigInteger(), nullable=False),
        sa.Column("stream_reported_high", sa.BigInteger(), nullable=False),
        sa.Column("gap_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rebirth_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("command_counter", sa.BigInteger(), nullable=False),
        sa.Column("code_cache_version", sa.BigInteger(), nullable=False),
        sa.Column("code_cache_reported", sa.BigInteger(), nullable=True),
        sa.Column("config_version", sa.BigInteger(), nullable=False),
        sa.Column("config_reported", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decommissioned_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_lockers_site_id_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lockers")),
    )
    with op.batch_alter_table("lockers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lockers_site_id"), ["site_id"], unique=False)

    op.create_table(
        "recipients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("village_site_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["village_site_id"], ["sites.id"], name=op.f("fk_recipients_village_site_id_sites")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recipients")),
        sa.UniqueConstraint("phone", name=op.f("uq_recipients_phone")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("carrier_id", sa.Integer(), nullable=True),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["carrier_id"], ["carriers.id"], name=op.f("fk_users_carrier_id_carriers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
    )
    op.create_table(
        "agent_villages",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_agent_villages_site_id_sites")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_agent_villages_user_id_users")
        ),
        sa.PrimaryKeyConstraint("user_id", "site_id", name=op.f("pk_agent_villages")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_tokens_user_id"), ["user_id"], unique=False)

    op.create_table(
        "carrier_quotas",
        sa.Column("locker_id", sa.String(length=64), nullable=False),
        sa.Column("carrier_id", sa.Integer(), nullable=False),
        sa.Column("max_compartments", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["carrier_id"], ["carriers.id"], name=op.f("fk_carrier_quotas_carrier_id_carriers")
        ),
        sa.ForeignKeyConstraint(
            ["locker_id"], ["lockers.id"], name=op.f("fk_carrier_quotas_locker_id_lockers")
        ),
        sa.PrimaryKeyConstraint("locker_id", "carrier_id", name=op.f("pk_carrier_quotas")),
    )
    op.create_table(
        "compartments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("locker_id", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=8), nullable=False),
        sa.Column("size", sa.String(length=2), nullable=False),
        sa.Column("temperature", sa.String(length=8), nullable=False),
        sa.Column("door", sa.String(length=8), nullable=False),
        sa.Column("lock", sa.String(length=10), nullable=False),
        sa.Column("occupied", sa.Boolean(), nullable=False),
        sa.Column("locker_in_service", sa.Boolean(), nullable=False),
        sa.Column("out_of_service_reason", sa.String(length=200), nullable=True),
        sa.Column("state_boot_id", sa.BigInteger(), nullable=False),
        sa.Column("state_seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["locker_id"], ["lockers.id"], name=op.f("fk_compartments_locker_id_lockers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_compartments")),
        sa.UniqueConstraint("locker_id", "label", name=op.f("uq_compartments_locker_id_label")),
    )
    with op.batch_alter_table("compartments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_compartments_locker_id"), ["locker_id"], unique=False)

    op.create_table(
        "consents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("recipient_id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("carrier_id", sa.Integer(), nullable=True),
        sa.Column("tracking_number", sa.String(length=64), nullable=True),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("recorded_by_user_id", sa.Integer(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["carrier_id"], ["carriers.id"], name=op.f("fk_consents_carrier_id_carriers")
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"], ["recipients.id"], name=op.f("fk_consents_recipient_id_recipients")
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by_user_id"],
            ["users.id"],
            name=op.f("fk_consents_recorded_by_user_id_users"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consents")),
    )
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_consents_recipient_id"), ["recipient_id"], unique=False
        )

    op.create_table(
        "idempotency_records",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("path", sa.String(length=300), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_idempotency_records_user_id_users")
        ),
        sa.PrimaryKeyConstraint("user_id", "key", name=op.f("pk_idempotency_records")),
    )
    op.create_table(
        "parcels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=16), nullable=False),
        sa.Column("carrier_id", sa.Integer(), nullable=False),
        sa.Column("tracking_number", sa.String(length=64), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("recipient_id", sa.Integer(), nullable=True),
        sa.Column("village_site_id", sa.Integer(), nullable=True),
        sa.Column("locker_id", sa.String(length=64), nullable=False),
        sa.Column("compartment_id", sa.Integer(), nullable=True),
        sa.Column("size", sa.String(length=2), nullable=False),
        sa.Column("temperature", sa.String(length=8), nullable=False),
        sa.Column("courier_user_id", sa.Integer(), nullable=True),
        sa.Column("open_purpose", sa.String(length=24), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deposited_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("picked_up_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("picked_up_via", sa.String(length=16), nullable=True),
        sa.Column("picked_up_by_user_id", sa.Integer(), nullable=True),
        sa.Column("offline_credit_s", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["carrier_id"], ["carriers.id"], name=op.f("fk_parcels_carrier_id_carriers")
        ),
        sa.ForeignKeyConstraint(
            ["compartment_id"],
            ["compartments.id"],
            name=op.f("fk_parcels_compartment_id_compartments"),
        ),
        sa.ForeignKeyConstraint(
            ["courier_user_id"], ["users.id"], name=op.f("fk_parcels_courier_user_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["locker_id"], ["lockers.id"], name=op.f("fk_parcels_locker_id_lockers")
        ),
        sa.ForeignKeyConstraint(
            ["picked_up_by_user_id"],
            ["users.id"],
            name=op.f("fk_parcels_picked_up_by_user_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"], ["recipients.id"], name=op.f("fk_parcels_recipient_id_recipients")
        ),
        sa.ForeignKeyConstraint(
            ["village_site_id"], ["sites.id"], name=op.f("fk_parcels_village_site_id_sites")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_parcels")),
        sa.UniqueConstraint(
            "carrier_id",
            "tracking_number",
            "direction",
            name=op.f("uq_parcels_carrier_id_tracking_number_direction"),
        ),
        sa.UniqueConstraint("ref", name=op.f("uq_parcels_ref")),
    )
    with op.batch_alter_table("parcels", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_parcels_locker_id"), ["locker_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_parcels_recipient_id"), ["recipient_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_parcels_state"), ["state"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_parcels_village_site_id"), ["village_site_id"], unique=False
        )
        batch_op.create_index(
            "uq_parcels_compartment_holding",
            ["compartment_id"],
            unique=True,
            sqlite_where=sa.text(
                "state IN ('booked', 'deposited', 'door_opened', 'dropped_off', 'expired', 'notified', 'reserved')"
            ),
            postgresql_where=sa.text(
                "state IN ('booked', 'deposited', 'door_opened', 'dropped_off', 'expired', 'notified', 'reserved')"
            ),
        )

    op.create_table(
        "commands",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("locker_id", sa.String(length=64), nullable=False),
        sa.Column("counter", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(length=24), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("purpose", sa.String(length=24), nullable=True),
        sa.Column("parcel_id", sa.Integer(), nullable=True),
        sa.Column("requested_by_user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result_status", sa.String(length=12), nullable=True),
        sa.Column("result_outcome", sa.String(length=16), nullable=True),
        sa.Column("result_reason", sa.String(length=32), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["locker_id"], ["lockers.id"], name=op.f("fk_commands_locker_id_lockers")
        ),
        sa.ForeignKeyConstraint(
            ["parcel_id"], ["parcels.id"], name=op.f("fk_commands_parcel_id_parcels")
        ),
        sa.ForeignKeyConstraint(
            ["requested_by_user_id"],
            ["users.id"],
            name=op.f("fk_commands_requested_by_user_id_users"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commands")),
        sa.UniqueConstraint("locker_id", "counter", name=op.f("uq_commands_locker_id_counter")),
    )
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.create_index("ix_commands_due", ["state", "next_attempt_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_commands_locker_id"), ["locker_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_commands_parcel_id"), ["parcel_id"], unique=False)

    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("to", sa.String(length=20), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("parcel_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["parcel_id"], ["parcels.id"], name=op.f("fk_notifications_parcel_id_parcels")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("ix_notifications_due", ["state", "next_attempt_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_notifications_parcel_id"), ["parcel_id"], unique=False)

    op.create_table(
        "pickup_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("parcel_id", sa.Integer(), nullable=False),
        sa.Column("locker_id", sa.String(length=64), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=8), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["locker_id"], ["lockers.id"], name=op.f("fk_pickup_codes_locker_id_lockers")
        ),
        sa.ForeignKeyConstraint(
            ["parcel_id"], ["parcels.id"], name=op.f("fk_pickup_codes_parcel_id_parcels")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pickup_codes")),
    )
    with op.batch_alter_table("pickup_codes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pickup_codes_parcel_id"), ["parcel_id"], unique=False)
        batch_op.create_index(
            "uq_pickup_codes_active",
            ["locker_id", "code_hash"],
            unique=True,
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )

    _append_only_audit_log()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_change ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    with op.batch_alter_table("pickup_codes", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_pickup_codes_active",
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )
        batch_op.drop_index(batch_op.f("ix_pickup_codes_parcel_id"))

    op.drop_table("pickup_codes")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notifications_parcel_id"))
        batch_op.drop_index("ix_notifications_due")

    op.drop_table("notifications")
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_commands_parcel_id"))
        batch_op.drop_index(batch_op.f("ix_commands_locker_id"))
        batch_op.drop_index("ix_commands_due")

    op.drop_table("commands")
    with op.batch_alter_table("parcels", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_parcels_compartment_holding",
            sqlite_where=sa.text(
                "state IN ('booked', 'deposited', 'door_opened', 'dropped_off', 'expired', 'notified', 'reserved')"
            ),
            postgresql_where=sa.text(
                "state IN ('booked', 'deposited', 'door_opened', 'dropped_off', 'expired', 'notified', 'reserved')"
            ),
        )
        batch_op.drop_index(batch_op.f("ix_parcels_village_site_id"))
        batch_op.drop_index(batch_op.f("ix_parcels_state"))
        batch_op.drop_index(batch_op.f("ix_parcels_recipient_id"))
        batch_op.drop_index(batch_op.f("ix_parcels_locker_id"))

    op.drop_table("parcels")
    op.drop_table("idempotency_records")
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consents_recipient_id"))

    op.drop_table("consents")
    with op.batch_alter_table("compartments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_compartments_locker_id"))

    op.drop_table("compartments")
    op.drop_table("carrier_quotas")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_tokens_user_id"))

    op.drop_table("api_tokens")
    op.drop_table("agent_villages")
    op.drop_table("users")
    op.drop_table("recipients")
    with op.batch_alter_table("lockers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lockers_site_id"))

    op.drop_table("lockers")
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sites_parent_id"))

    op.drop_table("sites")
    op.drop_table("device_messages")
    op.drop_table("code_attempts")
    op.drop_table("carriers")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_locker_id"))
        batch_op.drop_index(batch_op.f("ix_audit_log_at"))

    op.drop_table("audit_log")
