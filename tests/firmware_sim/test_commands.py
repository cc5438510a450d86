"""Commands at the locker: every refusal with its reason, repeats, and what each action does.

After each refusal the test checks that no lock was released: a locker obeys only authentic,
fresh, non-replayed commands addressed to it, and no command opens more than one door.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from typing import Any

import pytest

from firmware_sim.clock import ManualClock
from firmware_sim.locker import Locker
from firmware_sim.simulation import Simulation
from protocol.auth import COMMAND_DOMAIN, signing_input
from protocol.codec import encode, message_to_object
from protocol.codes import code_hash, full_sync_pages
from protocol.messages import (
    Birth,
    CodeEntry,
    CommandResult,
    ConfigApplied,
    Event,
    OpenCompartment,
    OpenPurpose,
    Outcome,
    Reboot,
    RefusalReason,
    RequestRebirth,
    ResultStatus,
    SetConfig,
    SyncCodes,
    SyncMode,
)
from protocol.topics import Channel
from tests.firmware_sim.support import Desk, Signer

OPEN_A01 = OpenCompartment("A01", OpenPurpose.PICKUP)


@pytest.fixture
def desk(sim: Simulation, locker: Locker, signer: Signer) -> Desk:
    locker.connected()
    desk = Desk(sim, locker, signer)
    desk.take()
    return desk


def deliver(locker: Locker, obj: dict[str, Any]) -> None:
    locker.receive(Channel.COMMAND, json.dumps(obj).encode())


def signed_object(obj: dict[str, Any], key: bytes) -> dict[str, Any]:
    """Sign an arbitrary command object by hand (for contents the codec would never build)."""
    mac = hmac.new(key, signing_input(COMMAND_DOMAIN, obj), hashlib.sha256).hexdigest()
    return {**obj, "sig": mac}


def refusal(desk: Desk, sim: Simulation) -> RefusalReason | None:
    sim.run_for(1_000)
    (result,) = desk.results()
    assert result.status is ResultStatus.REFUSED
    return result.reason


def assert_nothing_released(locker: Locker) -> None:
    assert locker.view().released == []


# --- refusals ---------------------------------------------------------------------------------


def test_garbage_is_refused_as_malformed(locker: Locker, sim: Simulation, desk: Desk) -> None:
    locker.receive(Channel.COMMAND, b"\x00not json at all")
    assert refusal(desk, sim) is RefusalReason.MALFORMED
    assert_nothing_released(locker)


def test_another_protocol_version_is_refused(
    locker: Locker, sim: Simulation, desk: Desk, signer: Signer
) -> None:
    obj = message_to_object(signer.command(locker.locker_id, OPEN_A01))
    deliver(locker, {**obj, "v": 2})
    assert refusal(desk, sim) is RefusalReason.UNSUPPORTED_VERSION
    assert_nothing_released(locker)


def test_an_unsigned_command_is_refused(
    locker: Locker, sim: Simulation, desk: Desk, signer: Signer
) -> None:
    obj = message_to_object(signer.command(locker.locker_id, OPEN_A01))
    del obj["sig"]
    deliver(locker, obj)
    assert refusal(desk, sim) is RefusalReason.UNSIGNED
    assert_nothing_released(locker)


def test_a_forged_signature_is_refused(
    locker: Locker, sim: Simulation, desk: Desk, signer: Signer
) -> None:
    forged = signer.command(locker.locker_id, OPEN_A01, key=b"attacker-key-of-32-bytes-length!")
    locker.receive(Channel.COMMAND, encode(forged))
    assert refusal(desk, sim) is RefusalReason.BAD_SIGNATURE
    # A genuine command with one field changed after signing is a forgery too.
    genuine = message_to_object(signer.command(locker.locker_id, OPEN_A01))
    deliver(locker, {**genuine, "args": {**genuine["args"], "compartment": "A02"}})
    assert refusal(desk, sim) is RefusalReason.BAD_SIGNATURE
    assert_nothing_released(locker)


def test_a_command_for_another_locker_is_refused_whoever_signed_it(
    locker: Locker, sim: Simulation, desk: Desk, signer: Signer
) -> None:
    theirs = signer.command("XZ-0002", OPEN_A01)  # signed with the other locker's key
    locker.receive(Channel.COMMAND, encode(theirs))
    assert refusal(desk, sim) is RefusalReason.BAD_SIGNATURE
    ours = signer.command("XZ-0002", OPEN_A01, key=signer.key(locker.locker_id))
    locker.receive(Channel.COMMAND, encode(ours))
    assert refusal(desk, sim) is RefusalReason.WRONG_LOCKER
    assert_nothing_released(locker)


@pytest.mark.parametrize(
    ("issued_offset_ms", "lifetime_ms", "reason"),
    [
        (-120_000, 60_000, RefusalReason.EXPIRED),
        (600_000, 60_000, RefusalReason.NOT_YET_VALID),
        (0, 2 * 3_600_000, RefusalReason.LIFETIME_TOO_LONG),
    ],
)
def test_stale_future_and_overlong_commands_are_refused(
    locker: Locker,
    sim: Simulation,
    desk: Desk,
    signer: Signer,
    clock: ManualClock,
    issued_offset_ms: int,
    lifetime_ms: int,
    reason: RefusalReason,
) -> None:
    issued = clock.now_ms() + issued_offset_ms
    desk.command(OPEN_A01, issued_at=issued, lifetime_ms=lifetime_ms)
    assert refusal(desk, sim) is reason
    assert_nothing_released(locker)


def test_expiry_is_judged_by_the_lockers_own_clock_even_when_it_is_skewed(
    locker: Locker, sim: Simulation, desk: Desk
) -> None:
    locker.set_clock_skew(5 * 60_000)  # the board's clock runs five minutes fast
    desk.command(OPEN_A01, lifetime_ms=60_000)
    assert refusal(desk, sim) is RefusalReason.EXPIRED
    assert_nothing_released(locker)


def test_a_reused_counter_is_replayed_and_a_counter_below_the_window_is_too_old(
    locker: Locker, sim: Simulation, desk: Desk
) -> None:
    desk.command(OpenCompartment("A01", OpenPurpose.PICKUP), counter=100)
    sim.run_for(1_000)
    assert [r.outcome for r in desk.results()] == [Outcome.OPENED]
    desk.command(OpenCompartment("A02", OpenPurpose.PICKUP), counter=100)
    assert refusal(desk, sim) is RefusalReason.REPLAYED
    desk.command(OpenCompartment("A03", OpenPurpose.PICKUP), counter=10)
    assert refusal(desk, sim) is RefusalReason.COUNTER_TOO_OLD
    # Afterwards: only the first command's compartment was ever released.
    assert locker.view().released == ["A01"]


def test_an_unknown_action_is_refused(
    locker: Locker, sim: Simulation, desk: Desk, signer: Signer
) -> None:
    obj = message_to_object(signer.command(locker.locker_id, OPEN_A01))
    obj = {k: v for k, v in obj.items() if k != "sig"}
    deliver(locker, signed_object({**obj, "action": "open_all"}, signer.key(locker.locker_id)))
    assert refusal(desk, sim) is RefusalReason.UNKNOWN_ACTION
    assert_nothing_released(locker)


def test_a_repeated_command_runs_once_and_is_answered_once(
    locker: Locker, sim: Simulation, desk: Desk, signer: Signer
) -> None:
    payload = encode(signer.command(locker.locker_id, OPEN_A01))
    locker.receive(Channel.COMMAND, payload)
    sim.run_for(600)
    locker.open_door("A01")
    locker.close_door("A01")
    for _ in range(3):  # QoS 1 redeliveries and controller retries of the same command
        locker.receive(Channel.COMMAND, payload)
    sim.run_for(10_000)
    results = desk.results()
    assert [(r.status, r.outcome) for r in results] == [(ResultStatus.OK, Outcome.OPENED)]
    # Afterwards: the door went through one open-close cycle and is locked.
    assert locker.view().released == []
    assert locker.counters["command_repeats_ignored"] == 3


def test_a_repeat_arriving_before_the_ack_leaves_the_first_result_buffered(
    locker: Locker, sim: Simulation, signer: Signer
) -> None:
    locker.connected()
    quiet = Desk(sim, locker, signer, acknowledge=False)
    quiet.take()
    payload = encode(signer.command(locker.locker_id, OPEN_A01))
    locker.receive(Channel.COMMAND, payload)
    sim.run_for(600)
    (first,) = quiet.results()
    assert first.outcome is Outcome.OPENED
    locker.receive(Channel.COMMAND, payload)
    sim.run_for(30_000)
    # Afterwards: no second result; the first one is still buffered and being resent.
    assert quiet.results() == []
    assert quiet.duplicates >= 1
    assert locker.view().pending_events == 3  # the birth, the door opening and that result


# --- what each action does -------------------------------------------------------------------


def test_no_command_opens_more_than_one_door(
    locker: Locker, sim: Simulation, desk: Desk, signer: Signer
) -> None:
    obj = message_to_object(signer.command(locker.locker_id, OPEN_A01))
    obj = {k: v for k, v in obj.items() if k != "sig"}
    many = {**obj, "args": {**obj["args"], "compartment": ["A01", "A02"]}}
    deliver(locker, signed_object(many, signer.key(locker.locker_id)))
    assert refusal(desk, sim) is RefusalReason.MALFORMED
    desk.command(OPEN_A01)
    sim.run_for(1_000)
    assert locker.view().released == ["A01"]


def _entries(locker: Locker, signer: Signer, clock: ManualClock, n: int) -> list[CodeEntry]:
    key = signer.code_key(locker.locker_id)
    expires = clock.now_ms() + 86_400_000
    return [
        CodeEntry(code_hash(key, locker.locker_id, f"{i:06d}"), "A01", f"P{i}", expires)
        for i in range(n)
    ]


def test_a_paged_full_sync_reports_missing_pages_and_applies_when_complete(
    locker: Locker, sim: Simulation, desk: Desk, signer: Signer, clock: ManualClock
) -> None:
    pages = full_sync_pages(_entries(locker, signer, clock, 250), to_version=7)
    assert len(pages) == 3
    desk.command(pages[2])
    desk.command(pages[0])
    first, second = desk.results()
    assert (first.outcome, first.missing_pages) == (Outcome.PAGES_PENDING, (1, 2))
    assert (second.outcome, second.missing_pages) == (Outcome.PAGES_PENDING, (2,))
    locker.connected()  # no-op while connected; a birth would carry the staging
    locker.disconnected()
    locker.connected()
    births = [m for m in desk.take() if isinstance(m, Birth)]
    assert births[-1].code_staging is not None and births[-1].code_staging.have == (1, 3)
    desk.command(pages[1])
    (done,) = desk.results()
    assert (done.outcome, done.cache_version) == (Outcome.APPLIED, 7)
    assert locker.view().codes_cached == 250 and locker.view().code_cache_version == 7


def test_a_delta_sync_from_the_wrong_version_is_refused_with_the_cache_version(
    locker: Locker, sim: Simulation, desk: Desk, signer: Signer, clock: ManualClock
) -> None:
    entries = _entries(locker, signer, clock, 3)
    desk.command(full_sync_pages(entries[:2], to_version=1)[0])
    desk.command(SyncCodes(SyncMode.DELTA, to_version=3, from_version=2, add=(entries[2],)))
    desk.command(SyncCodes(SyncMode.DELTA, to_version=2, from_version=1, add=(entries[2],)))
    applied, mismatch, delta = desk.results()
    assert applied.outcome is Outcome.APPLIED
    assert (mismatch.reason, mismatch.cache_version) == (
        RefusalReason.CACHE_VERSION_MISMATCH,
        1,
    )
    assert (delta.outcome, delta.cache_version) == (Outcome.APPLIED, 2)
    assert locker.view().codes_cached == 3


def test_set_config_applies_reports_and_changes_behaviour(
    locker: Locker, sim: Simulation, desk: Desk
) -> None:
    desk.command(SetConfig(config_version=4, heartbeat_s=5, door_open_alarm_s=10))
    messages = desk.take()
    events = [m.data for m in messages if isinstance(m, Event)]
    (result,) = [m for m in messages if isinstance(m, CommandResult)]
    assert events == [ConfigApplied(4)]
    assert (result.outcome, result.config_version) == (Outcome.APPLIED, 4)
    # Afterwards: the new heartbeat is in force (telemetry every 5 s).
    sim.run_for(5_000)
    desk.take()
    sim.run_for(20_000)
    assert sum(1 for m in desk.take() if type(m).__name__ == "Telemetry") == 4
    # An older configuration does not roll it back; the result says which version is in force.
    desk.command(SetConfig(config_version=3, heartbeat_s=60))
    (older,) = desk.results()
    assert older.config_version == 4 and locker.settings.heartbeat_s == 5


def test_request_rebirth_sends_a_birth_and_reboot_starts_a_new_boot(
    locker: Locker, sim: Simulation, desk: Desk
) -> None:
    desk.command(RequestRebirth())
    kinds = [type(m).__name__ for m in desk.take()]
    assert kinds == ["Birth", "CommandResult"]
    boot = locker.boot_id
    desk.command(Reboot())
    (result,) = desk.results()
    assert result.outcome is Outcome.REBOOTING
    sim.run_for(2_000)
    # Afterwards: a new boot id, numbering from 1 again, waiting for its link.
    assert locker.boot_id == boot + 1
    assert locker.view().seq == 0 and not locker.is_connected


def test_set_config_defaults_match_the_protocol_defaults() -> None:
    from firmware_sim.settings import Settings

    protocol_defaults = {
        f.name: f.default for f in dataclasses.fields(SetConfig) if f.name != "config_version"
    }
    ours = Settings().to_dict()
    del ours["config_version"]
    assert ours == protocol_defaults
