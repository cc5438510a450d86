"""The configuration shadow on the controller side (real databases, a scripted locker): desired
settings checked against the protocol, versioned, sent as a signed ``set_config``, superseded,
reported back, caught up on a birth; the fleet's out-of-sync view; the API's errors; and the
migration that keeps every existing locker's code key."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import pytest
from alembic import command
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection

from controller.api.routers.configs import ConfigIn
from controller.db.engine import open_database
from controller.db.migrate import alembic_config, upgrade
from controller.db.models import AuditEntry, Command, Locker, LockerConfig
from controller.domain.config import FACTORY, FIELDS, InvalidConfig, SyncState
from controller.runtime import Runtime, build_runtime
from controller.services.config_shadow import note_applied
from controller.services.context import Actor
from controller.testing.seed import Seeded
from protocol.auth import ReplayWindow, check_command
from protocol.messages import (
    CompartmentState,
    ConfigApplied,
    DoorState,
    LockState,
    ResultStatus,
    SetConfig,
)
from tests.controller.conftest import controller_settings
from tests.controller.support import LAYOUT, RecordingSender, ScriptedLocker, actor, auth


async def set_config_commands(runtime: Runtime, locker_id: str) -> list[Command]:
    async with runtime.db.reader() as session:
        return list(
            await session.scalars(
                select(Command)
                .where(Command.locker_id == locker_id, Command.action == "set_config")
                .order_by(Command.counter)
            )
        )


async def test_desired_settings_go_out_signed_and_the_locker_reports_them_applied(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker
) -> None:
    technician = await actor(runtime, seeded, "technician")
    view = await runtime.services.config.set_desired(
        technician, locker.locker_id, {"heartbeat_s": 60, "keypad_lockout_s": 300}, "winter"
    )
    assert (view.desired_version, view.reported_version, view.sync) == (1, 0, SyncState.PENDING)
    assert view.desired == {**FACTORY, "heartbeat_s": 60, "keypad_lockout_s": 300}
    assert view.reported == FACTORY and view.last_command is not None

    # What goes on the wire is a set_config the locker's own checks accept, carrying it all.
    due = await runtime.bridge.dispatcher.claim_due()  # type: ignore[union-attr]
    (outgoing,) = [o for o in due if o.command_id == view.last_command.id]
    key = bytes.fromhex(seeded.lockers[locker.locker_id].command_key_hex)
    check = check_command(
        outgoing.payload, locker_id=locker.locker_id, key=key,
        now_ms=locker.now_ms(), window=ReplayWindow(),
    )  # fmt: skip
    assert check.accepted and check.command is not None
    assert check.command.args == SetConfig(config_version=1, **view.desired)

    await locker.send(
        locker.event(ConfigApplied(1)),
        locker.result(outgoing.command_id, ResultStatus.OK, outcome="applied", config_version=1),
    )
    after = await runtime.services.config.get(technician, locker.locker_id)
    # Afterwards: in sync, the command settled, the change audited with who, what and why.
    assert (after.reported_version, after.sync) == (1, SyncState.IN_SYNC)
    assert after.reported == after.desired
    assert after.last_command is not None and after.last_command.state == "succeeded"
    async with runtime.db.reader() as session:
        entry = await session.scalar(
            select(AuditEntry).where(AuditEntry.action == "config_desired")
        )
    assert entry is not None and entry.actor_user_id == technician.user_id
    assert entry.detail["changes"] == {"heartbeat_s": 60, "keypad_lockout_s": 300}
    assert entry.detail["note"] == "winter" and entry.detail["version"] == 1


async def test_a_partial_change_bumps_the_version_and_withdraws_the_older_command(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker
) -> None:
    admin = await actor(runtime, seeded, "admin")
    first = await runtime.services.config.set_desired(admin, locker.locker_id, {"heartbeat_s": 60})
    second = await runtime.services.config.set_desired(
        admin, locker.locker_id, {"chilled_max_deci_celsius": 50}
    )
    assert (first.desired_version, second.desired_version) == (1, 2)
    assert second.desired == {**FACTORY, "heartbeat_s": 60, "chilled_max_deci_celsius": 50}
    sent = await set_config_commands(runtime, locker.locker_id)
    assert [(c.state, c.args["config_version"]) for c in sent] == [
        ("cancelled", 1), ("pending", 2),
    ]  # fmt: skip
    # The same values again make no new version and no new command.
    same = await runtime.services.config.set_desired(admin, locker.locker_id, {"heartbeat_s": 60})
    assert same.desired_version == 2
    assert len(await set_config_commands(runtime, locker.locker_id)) == 2
    async with runtime.db.reader() as session:
        history = (await session.scalars(select(LockerConfig.version))).all()
    assert sorted(history) == [1, 2]


async def test_asking_again_resends_to_a_locker_whose_command_expired_unanswered(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker
) -> None:
    admin = await actor(runtime, seeded, "admin")
    await runtime.services.config.set_desired(admin, locker.locker_id, {"heartbeat_s": 90})
    runtime.ctx.clock.advance(hours=1)  # type: ignore[attr-defined]
    await runtime.bridge.dispatcher.claim_due()  # type: ignore[union-attr]  # expires it
    again = await runtime.services.config.set_desired(admin, locker.locker_id, {"heartbeat_s": 90})
    # Afterwards: the same version (nothing new was desired), sent once more.
    assert (again.desired_version, again.sync) == (1, SyncState.PENDING)
    sent = await set_config_commands(runtime, locker.locker_id)
    assert [(c.state, c.args["config_version"]) for c in sent] == [
        ("expired", 1), ("pending", 1),
    ]  # fmt: skip
    await runtime.services.config.set_desired(admin, locker.locker_id, {"heartbeat_s": 90})
    assert len(await set_config_commands(runtime, locker.locker_id)) == 2, "one under way"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"heartbeat_s": 2}, "heartbeat_s: must be between 5 and 3600, got 2"),
        ({"chilled_min_deci_celsius": 70}, "chilled_min_deci_celsius: must be below"),
        ({"heartbeat_s": "30"}, "heartbeat_s: expected an integer"),
        ({"fan_speed": 3}, "unknown setting fan_speed"),
        ({}, "nothing to change"),
    ],
)
async def test_an_invalid_configuration_is_refused_and_changes_nothing(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker, changes: dict[str, object],
    message: str,
) -> None:  # fmt: skip
    technician = await actor(runtime, seeded, "technician")
    with pytest.raises(InvalidConfig, match=message):
        await runtime.services.config.set_desired(technician, locker.locker_id, changes)
    # Afterwards: no version, no command, no audit entry.
    view = await runtime.services.config.get(technician, locker.locker_id)
    assert (view.desired_version, view.sync) == (0, SyncState.UNMANAGED)
    assert await set_config_commands(runtime, locker.locker_id) == []
    async with runtime.db.reader() as session:
        assert await session.scalar(select(func.count()).select_from(LockerConfig)) == 0
        assert await session.scalar(
            select(func.count()).where(AuditEntry.action == "config_desired")
        ) == 0  # fmt: skip


async def test_the_api_says_what_is_wrong_and_who_may_change(
    api: httpx.AsyncClient, seeded: Seeded, locker: ScriptedLocker
) -> None:
    url = f"/api/v1/lockers/{locker.locker_id}/config"
    bad = await api.patch(url, headers=auth(seeded, "technician"), json={"lock_release_s": 90})
    assert bad.status_code == 422
    assert bad.json()["error"] == {
        "code": "invalid_config", "message": "lock_release_s: must be between 1 and 60, got 90",
    }  # fmt: skip
    operator = await api.patch(url, headers=auth(seeded, "operator"), json={"heartbeat_s": 60})
    assert operator.status_code == 403
    assert (await api.get(url, headers=auth(seeded, "courier"))).status_code == 403
    good = await api.patch(url, headers=auth(seeded, "technician"), json={"heartbeat_s": 60})
    assert good.status_code == 200, good.text
    assert good.json()["desired"]["heartbeat_s"] == 60 and good.json()["sync"] == "pending"
    read = await api.get(url, headers=auth(seeded, "operator"))
    assert read.json()["desired_version"] == 1
    assert (
        await api.get("/api/v1/lockers/nope/config", headers=auth(seeded, "operator"))
    ).status_code == 404


def test_the_api_body_names_exactly_the_protocols_settings() -> None:
    assert set(ConfigIn.model_fields) - {"note"} == set(FIELDS)


async def test_a_birth_behind_the_desired_version_gets_a_new_set_config(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker
) -> None:
    """The locker was away longer than the command lived: its birth brings it up to date."""
    admin = await actor(runtime, seeded, "admin")
    await runtime.services.config.set_desired(admin, locker.locker_id, {"heartbeat_s": 45})
    runtime.ctx.clock.advance(hours=2)  # type: ignore[attr-defined]
    await runtime.bridge.dispatcher.claim_due()  # type: ignore[union-attr]  # expires it
    (expired,) = await set_config_commands(runtime, locker.locker_id)
    assert expired.state == "expired"

    locker.boot_id, locker.seq = 2, 0
    compartments = [
        CompartmentState(label, size, temp, DoorState.CLOSED, LockState.LOCKED, False, True)
        for label, size, temp in LAYOUT
    ]
    await locker.send(locker.presence(), locker.birth(compartments))
    expired_then_new = await set_config_commands(runtime, locker.locker_id)
    assert [(c.state, c.args["config_version"]) for c in expired_then_new] == [
        ("expired", 1), ("pending", 1),
    ]  # fmt: skip
    # A second birth while that one is under way queues nothing more.
    await locker.send(locker.birth(compartments))
    assert len(await set_config_commands(runtime, locker.locker_id)) == 2
    # A birth that reports the desired version is in sync and queues nothing.
    in_sync = dataclasses.replace(locker.birth(compartments), config_version=1)
    await locker.send(in_sync)
    view = await runtime.services.config.get(admin, locker.locker_id)
    assert view.sync is SyncState.IN_SYNC
    assert len(await set_config_commands(runtime, locker.locker_id)) == 2


async def test_the_fleet_view_lists_lockers_out_of_sync_by_site(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker
) -> None:
    admin: Actor = await actor(runtime, seeded, "admin")
    other = next(lid for lid in seeded.lockers if lid != locker.locker_id)
    for locker_id in (locker.locker_id, other):
        await runtime.services.config.set_desired(admin, locker_id, {"door_open_alarm_s": 300})
    everywhere = await runtime.services.config.out_of_sync(admin)
    assert {v.locker_id for v in everywhere} == {locker.locker_id, other}
    site = seeded.locker_sites[locker.locker_id]
    here = await runtime.services.config.out_of_sync(admin, site)
    assert locker.locker_id in {v.locker_id for v in here}
    assert other not in {v.locker_id for v in here} or seeded.locker_sites[other] == site
    await locker.send(locker.event(ConfigApplied(1)))
    after = await runtime.services.config.out_of_sync(admin)
    # Afterwards: the locker that applied it has left the list; the other has not.
    assert [v.locker_id for v in after] == [other]


async def test_existing_lockers_keep_their_code_key_through_the_migration(
    database_url: str,
) -> None:
    db = open_database(database_url)
    try:
        await upgrade(db, "0002")
        async with db.engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO sites (id, kind, name, created_at) "
                    "VALUES (1, 'county', 'c', CURRENT_TIMESTAMP)"
                )
            )
            await connection.execute(
                text(
                    "INSERT INTO lockers (id, site_id, name, status, key_generation, online, "
                    "presence_boot_id, presence_connection, boot_id, birth_seq, stream_boot_id, "
                    "stream_high, stream_count, stream_skipped, stream_reported_high, "
                    "command_counter, code_cache_version, config_version, created_at) VALUES "
                    "('OLD1', 1, 'old', 'active', 3, false, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, "
                    "CURRENT_TIMESTAMP)"
                )
            )
        await upgrade(db)
        async with db.reader() as session:
            row = await session.get(Locker, "OLD1")
            assert row is not None and (row.key_generation, row.code_key_generation) == (3, 3)

        def downgrade(connection: Connection) -> None:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, "0002")

        async with db.engine.begin() as connection:
            await connection.run_sync(downgrade)
        await upgrade(db)  # and up again
    finally:
        await db.dispose()


def test_a_late_config_applied_never_lowers_the_reported_version() -> None:
    locker = Locker(id="X1", boot_id=2, config_reported=5)
    note_applied(locker, boot_id=2, version=4)  # late, same boot: the firmware never rolls back
    note_applied(locker, boot_id=1, version=9)  # from a boot before the newest birth: old news
    assert locker.config_reported == 5
    note_applied(locker, boot_id=2, version=6)
    assert locker.config_reported == 6
    note_applied(locker, boot_id=3, version=1)  # a newer boot (its birth not yet processed)
    assert locker.config_reported == 1


async def test_two_replicas_changing_one_locker_at_once_make_two_versions_and_one_command(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker, migrated_url: str, topic_root: str
) -> None:
    """Two controller instances (own engines, one database) take a change each at the same
    moment: the locker row lock orders them, so the versions are 1 and 2, never 1 twice, and
    only the newer set_config is left under way."""
    second = build_runtime(
        controller_settings(migrated_url, topic_root), clock=runtime.ctx.clock,
        sender=RecordingSender(),
    )  # fmt: skip
    try:
        admins = [await actor(rt, seeded, "admin") for rt in (runtime, second)]
        views = await asyncio.gather(
            runtime.services.config.set_desired(admins[0], locker.locker_id, {"heartbeat_s": 40}),
            second.services.config.set_desired(admins[1], locker.locker_id, {"lock_release_s": 5}),
        )
    finally:
        await second.stop()
    assert sorted(v.desired_version for v in views) == [1, 2]
    newest = max(views, key=lambda v: v.desired_version)
    # Afterwards: the newest version holds both changes, and only its command is under way.
    assert (newest.desired["heartbeat_s"], newest.desired["lock_release_s"]) == (40, 5)
    sent = await set_config_commands(runtime, locker.locker_id)
    assert sorted((c.args["config_version"], c.state) for c in sent) == [
        (1, "cancelled"), (2, "pending"),
    ]  # fmt: skip
