"""The JSON report of a fleet run, built from client-side counters, and merged across processes.

One :class:`FleetReport` per run (or per worker process, then :func:`merge`). Connection counts
come from the clients (CONNACKs, PUBACKs), never from the broker. ``events`` counts what the
lockers reported by kind, ``refusals`` the commands refused by reason, ``faults`` what the fault
injector started by kind.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from firmware_sim.fleet import FleetStats
from protocol.messages import EventKind

_EVENT_KINDS = {k.value for k in EventKind}


@dataclass
class FleetReport:
    lockers: int = 0
    processes: int = 1
    duration_s: float = 0.0
    all_connected_after_s: float | None = None
    """Seconds from start until every locker had its CONNACK (None: never all at once)."""
    connected: int = 0
    ever_connected: int = 0
    connacks: int = 0
    connack_refused: int = 0
    messages_sent: int = 0
    pubacks: int = 0
    messages_received: int = 0
    foreign_dropped: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    errors: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    faults_not_applicable: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    results: dict[str, int] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)
    commands: dict[str, int] = field(default_factory=dict)
    lockers_detail: dict[str, int] = field(default_factory=dict)
    last_error: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def build_report(
    stats: FleetStats,
    locker_counters: Mapping[str, int],
    *,
    duration_s: float,
    all_connected_after_s: float | None,
) -> FleetReport:
    """Return the report of one fleet from its stats and its lockers' summed counters."""
    events, results, refusals, commands, detail = {}, {}, {}, {}, {}
    for key, value in sorted(locker_counters.items()):
        if key in _EVENT_KINDS:
            events[key] = value
        elif key.startswith("result_"):
            results[key.removeprefix("result_")] = value
        elif key.startswith("refused_"):
            refusals[key.removeprefix("refused_")] = value
        elif key.startswith("command_"):
            commands[key.removeprefix("command_")] = value
        else:
            detail[key] = value
    return FleetReport(
        lockers=stats.lockers,
        duration_s=round(duration_s, 3),
        all_connected_after_s=(
            None if all_connected_after_s is None else round(all_connected_after_s, 3)
        ),
        connected=stats.connected,
        ever_connected=stats.ever_connected,
        connacks=stats.connacks,
        connack_refused=stats.connack_refused,
        messages_sent=stats.publishes,
        pubacks=stats.pubacks,
        messages_received=stats.received,
        foreign_dropped=stats.foreign_dropped,
        reconnects=stats.reconnects,
        connect_failures=stats.connect_failures,
        disconnects=stats.disconnects,
        errors=stats.errors,
        faults=dict(stats.faults),
        faults_not_applicable=dict(stats.faults_not_applicable),
        events=events,
        results=results,
        refusals=refusals,
        commands=commands,
        lockers_detail=detail,
        last_error=stats.last_error,
    )


def _sum(dicts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for d in dicts:
        total.update(d)
    return dict(sorted(total.items()))


def merge(reports: list[FleetReport]) -> FleetReport:
    """Return one report for several processes' reports (sums; the slowest connect time)."""
    if not reports:
        return FleetReport(processes=0)
    numbers: dict[str, Any] = {}
    for name in (
        "lockers",
        "connected",
        "ever_connected",
        "connacks",
        "connack_refused",
        "messages_sent",
        "pubacks",
        "messages_received",
        "foreign_dropped",
        "reconnects",
        "connect_failures",
        "disconnects",
        "errors",
    ):
        numbers[name] = sum(getattr(r, name) for r in reports)
    times = [r.all_connected_after_s for r in reports]
    return FleetReport(
        processes=len(reports),
        duration_s=max(r.duration_s for r in reports),
        all_connected_after_s=None if None in times else max(t for t in times if t is not None),
        faults=_sum(r.faults for r in reports),
        faults_not_applicable=_sum(r.faults_not_applicable for r in reports),
        events=_sum(r.events for r in reports),
        results=_sum(r.results for r in reports),
        refusals=_sum(r.refusals for r in reports),
        commands=_sum(r.commands for r in reports),
        lockers_detail=_sum(r.lockers_detail for r in reports),
        last_error=next((r.last_error for r in reports if r.last_error), ""),
        **numbers,
    )
