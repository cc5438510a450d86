"""The numbers behind ``/metrics``, read from the database (the same from every replica).

Per-replica counters (messages ingested, duplicates, rejections, queue depth) live in the
MQTT bridge's stats and are added by the API layer, labelled with the replica's instance id.
Command latency is summarised over a recent window of settled openings rather than kept in
process memory, so any replica answers for the fleet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select

from controller.db.models import Alarm, FleetControl, Locker, Notification
from controller.db.models import Command as CommandRow
from controller.domain.alarms import OPEN_ALARM_STATES
from controller.services.context import Context
from controller.services.open_guard import LOCKDOWN
from protocol.messages import Action

LATENCY_WINDOW = timedelta(minutes=15)
LATENCY_SAMPLE = 5000
QUANTILES = (0.5, 0.9, 0.99)


@dataclass(frozen=True)
class FleetMetrics:
    lockers: dict[str, int]
    """Active lockers by ``online`` / ``offline``."""
    open_alarms: dict[tuple[str, str], int]
    """Open alarms by (type, severity)."""
    commands: dict[str, int]
    """Commands by state."""
    notifications_pending: int
    lockdown: bool
    open_latency_s: dict[float, float] = field(default_factory=dict)
    """Quantiles of request-to-result time of door openings settled in the last window."""
    open_latency_count: int = 0


def quantile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of non-empty ``sorted_values``."""
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def fleet_metrics(ctx: Context) -> FleetMetrics:
    """Read the fleet's gauges from the database."""
    since = ctx.clock.now() - LATENCY_WINDOW
    async with ctx.db.reader() as session:
        lockers = {"online": 0, "offline": 0}
        for online, n in await session.execute(
            select(Locker.online, func.count(Locker.id))
            .where(Locker.status == "active")
            .group_by(Locker.online)
        ):
            lockers["online" if online else "offline"] += n
        alarms = {
            (type_, severity): n
            for type_, severity, n in await session.execute(
                select(Alarm.type, Alarm.severity, func.count(Alarm.id))
                .where(Alarm.state.in_(list(OPEN_ALARM_STATES)))
                .group_by(Alarm.type, Alarm.severity)
            )
        }
        commands = {
            state: n
            for state, n in await session.execute(
                select(CommandRow.state, func.count(CommandRow.id)).group_by(CommandRow.state)
            )
        }
        pending = await session.scalar(
            select(func.count(Notification.id)).where(Notification.state == "pending")
        )
        control = await session.get(FleetControl, LOCKDOWN)
        settled = (
            await session.execute(
                select(CommandRow.created_at, CommandRow.completed_at)
                .where(
                    CommandRow.action == Action.OPEN_COMPARTMENT.value,
                    CommandRow.state == "succeeded",
                    CommandRow.completed_at >= since,
                )
                .limit(LATENCY_SAMPLE)
            )
        ).all()
    latencies = sorted(
        (done - created).total_seconds() for created, done in settled if done is not None
    )
    return FleetMetrics(
        lockers=lockers,
        open_alarms=alarms,
        commands=commands,
        notifications_pending=int(pending or 0),
        lockdown=bool(control and control.enabled),
        open_latency_s={q: quantile(latencies, q) for q in QUANTILES} if latencies else {},
        open_latency_count=len(latencies),
    )
