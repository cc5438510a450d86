"""Alembic migrations: the only way lockerfleet's schema is created or changed."""
