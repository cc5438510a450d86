"""What must hold after a scenario, each checked on its own and reported as one test case.

The checks compare three independent records: what the simulated people and couriers did
(the traffic's own log), what the simulated lockers themselves know (their firmware state and
counters), and what the controller stored.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select, text

from controller.db.models import AuditEntry, Compartment, DeviceMessage, Parcel
from controller.domain.states import FINAL_STATES, HOLDING_STATES
from controller.runtime import Runtime
from firmware_sim.fleet import MqttFleet


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    skipped: bool = False


@dataclass
class Evidence:
    """What the scenario did, as its own participants recorded it."""

    created_tracking: set[str] = field(default_factory=set)
    faults: list[tuple[str, str]] = field(default_factory=list)  # (kind, locker_id)


FAULT_EVENTS = {
    "door_jam": "door_jammed",
    "stuck_sensor": "sensor_fault",
    "temperature_excursion": "temperature_excursion",
    "power_loss": "power_changed",
}
"""The event through which the controller learns of each fault (network drops show as
presence, which is checked through the locker being back online)."""


async def check_all(runtime: Runtime, fleet: MqttFleet, evidence: Evidence) -> list[Check]:
    checks = [
        await every_locker_message_accepted(runtime),
        await parcels_neither_lost_nor_duplicated(runtime, evidence),
        await no_compartment_held_twice(runtime),
        await every_door_opening_audited(runtime, fleet),
        await occupancy_matches_the_lockers(runtime, fleet),
        await every_offline_pickup_reconciled(runtime),
        await no_command_executed_twice(runtime, fleet),
        await every_fault_seen(runtime, fleet, evidence),
    ]
    return checks


async def every_locker_message_accepted(runtime: Runtime) -> Check:
    """The simulated firmware and the controller share one contract: the controller rejected
    nothing the lockers sent (a rejection would be a bug on one side)."""
    async with runtime.db.reader() as session:
        rejected = (await session.execute(
            select(DeviceMessage.locker_id, DeviceMessage.seq, DeviceMessage.kind)
            .where(DeviceMessage.kind.like("rejected:%"))
        )).all()  # fmt: skip
    bridge = runtime.bridge.stats.rejections_by_code if runtime.bridge else {}
    ok = not rejected and not bridge
    return Check("every locker message accepted", ok,
                 f"stored as rejected {[tuple(r) for r in rejected][:5]}; "
                 f"rejections by code {dict(bridge)}")  # fmt: skip


async def parcels_neither_lost_nor_duplicated(runtime: Runtime, evidence: Evidence) -> Check:
    async with runtime.db.reader() as session:
        stored = Counter((await session.scalars(select(Parcel.tracking_number))).all())
    dupes = sorted(t for t, n in stored.items() if n > 1)
    lost = sorted(evidence.created_tracking - set(stored))
    unknown = sorted(set(stored) - evidence.created_tracking)
    ok = not (dupes or lost or unknown)
    return Check("no parcel lost or duplicated", ok,
                 f"{len(evidence.created_tracking)} created, {len(stored)} stored; "
                 f"lost {lost[:5]}, duplicated {dupes[:5]}, unexpected {unknown[:5]}")  # fmt: skip


async def no_compartment_held_twice(runtime: Runtime) -> Check:
    """No two parcels ever held one compartment at overlapping times."""
    async with runtime.db.reader() as session:
        rows = (await session.execute(
            select(Parcel.compartment_id, Parcel.created_at, Parcel.state,
                   Parcel.state_changed_at, Parcel.ref)
            .where(Parcel.compartment_id.is_not(None))
        )).all()  # fmt: skip
    spans: dict[int, list[tuple[datetime, datetime | None, str]]] = defaultdict(list)
    for compartment_id, created, state, changed, ref in rows:
        if compartment_id is None:
            continue
        end = changed if state in FINAL_STATES else None
        spans[compartment_id].append((created, end, ref))
    overlaps = []
    for compartment_id, items in spans.items():
        items.sort(key=lambda s: s[0])
        for (_start_a, end_a, ref_a), (start_b, _end_b, ref_b) in itertools.pairwise(items):
            if end_a is None or end_a > start_b:
                overlaps.append(f"{ref_a}/{ref_b} in compartment {compartment_id}")
    holding = Counter(r[0] for r in rows if r[2] in HOLDING_STATES)
    overlaps += [f"{n} parcels hold {c} now" for c, n in holding.items() if n > 1]
    return Check(
        "no compartment ever held by two parcels",
        not overlaps,
        f"{len(rows)} parcels over {len(spans)} compartments; {overlaps[:5]}",
    )


async def every_door_opening_audited(runtime: Runtime, fleet: MqttFleet) -> Check:
    on_lockers = {lid: locker.counters["door_opened"] for lid, locker in fleet.lockers.items()}
    async with runtime.db.reader() as session:
        audited = (await session.execute(
            select(AuditEntry.locker_id, AuditEntry.cause).where(AuditEntry.action == "door_opened")
        )).all()  # fmt: skip
    per_locker = Counter(lid for lid, _cause in audited)
    differing = {lid: (n, per_locker.get(lid, 0)) for lid, n in on_lockers.items()
                 if per_locker.get(lid, 0) != n}  # fmt: skip
    without_cause = sum(1 for _lid, cause in audited if not cause)
    ok = not differing and without_cause == 0
    causes = dict(Counter(cause for _lid, cause in audited))
    return Check("every door opening in the audit log with its cause", ok,
                 f"lockers opened {sum(on_lockers.values())} doors; audit has {len(audited)} "
                 f"openings, {without_cause} without a cause; causes {causes}; "
                 f"differing (locker: opened, audited) {differing}")  # fmt: skip


async def occupancy_matches_the_lockers(runtime: Runtime, fleet: MqttFleet) -> Check:
    async with runtime.db.reader() as session:
        rows = (await session.execute(
            select(Compartment.locker_id, Compartment.label, Compartment.occupied)
        )).all()  # fmt: skip
    mine = {(lid, label): occupied for lid, label, occupied in rows}
    theirs = {}
    for locker_id in fleet.lockers:
        for label, compartment in fleet.view(locker_id).compartments.items():
            theirs[locker_id, label] = compartment.occupied
    differ = sorted(k for k in theirs if mine.get(k) != theirs[k])
    return Check(
        "occupancy reported by the controller equals the lockers' own",
        not differ,
        f"{len(theirs)} compartments compared; differing {differ[:8]}",
    )


async def every_offline_pickup_reconciled(runtime: Runtime) -> Check:
    async with runtime.db.reader() as session:
        pickups = (await session.scalars(
            select(DeviceMessage.payload).where(DeviceMessage.kind == "pickup")
        )).all()  # fmt: skip
        refs = {p["data"]["parcel_ref"]: bool(p["data"]["offline"]) for p in pickups}
        states = dict((await session.execute(
            select(Parcel.ref, Parcel.state).where(Parcel.ref.in_(refs))
        )).all()) if refs else {}  # fmt: skip
    offline = [ref for ref, was_offline in refs.items() if was_offline]
    settled = {"picked_up", "dropped_off", "collected", "returned"}
    unsettled = sorted(ref for ref in refs if states.get(ref) not in settled)
    return Check("every offline pickup reconciled", not unsettled,
                 f"{len(refs)} keypad codes used ({len(offline)} offline); "
                 f"not reconciled {unsettled[:5]}")  # fmt: skip


async def no_command_executed_twice(runtime: Runtime, fleet: MqttFleet) -> Check:
    async with runtime.db.reader() as session:
        results = (await session.scalars(
            select(DeviceMessage.payload).where(DeviceMessage.kind == "result")
        )).all()  # fmt: skip
    executed = Counter(r["command_id"] for r in results if r.get("status") in ("ok", "failed"))
    twice = sorted(cid for cid, n in executed.items() if n > 1)
    on_lockers = fleet.locker_counters()
    answered = on_lockers["result_ok"] + on_lockers["result_failed"]
    ok = not twice and answered == sum(executed.values())
    return Check("no command executed twice", ok,
                 f"{sum(executed.values())} executions stored, lockers report {answered}; "
                 f"repeats ignored by lockers {on_lockers['command_repeats_ignored']}; "
                 f"executed twice {twice[:5]}")  # fmt: skip


async def every_fault_seen(runtime: Runtime, fleet: MqttFleet, evidence: Evidence) -> Check:
    """Every injected fault that showed on its locker raised its alarm (or, without an alarm
    service, reached the controller as the event an alarm is raised from). A fault that never
    showed (a jammed bolt on a locker nobody opened meanwhile) is counted, not required."""
    if not evidence.faults:
        return Check("every alarm raised for an injected fault", True, "no faults injected")
    async with runtime.db.reader() as session:
        kinds_by_locker: dict[str, set[str]] = defaultdict(set)
        rows = (await session.execute(select(DeviceMessage.locker_id, DeviceMessage.kind))).all()
        for locker_id, kind in rows:
            kinds_by_locker[locker_id].add(kind)
        alarms = await _alarms_by_locker(session)
    missing, unshown = [], 0
    for kind, locker_id in evidence.faults:
        expected = FAULT_EVENTS.get(kind)
        if expected is None:
            continue
        if not fleet.lockers[locker_id].counters[expected]:
            unshown += 1
            continue
        if alarms is not None:
            if not any(expected in a for a in alarms.get(locker_id, set())):
                missing.append(f"{kind}@{locker_id} (no {expected} alarm)")
        elif expected not in kinds_by_locker[locker_id]:
            missing.append(f"{kind}@{locker_id} (no {expected} event)")
    source = "alarms" if alarms is not None else "events (no alarm table)"
    return Check("every alarm raised for an injected fault", not missing,
                 f"{len(evidence.faults)} faults injected ({unshown} never showed), checked "
                 f"against {source}; missing {missing[:5]}")  # fmt: skip


async def _alarms_by_locker(session: Any) -> dict[str, set[str]] | None:
    def has_table(connection: Any) -> bool:
        return bool(sa_inspect(connection).has_table("alarms"))

    connection = await session.connection()
    if not await connection.run_sync(has_table):
        return None
    rows = (await session.execute(text("SELECT locker_id, type FROM alarms"))).all()
    found: dict[str, set[str]] = defaultdict(set)
    for locker_id, kind in rows:
        found[str(locker_id)].add(str(kind))
    return found
