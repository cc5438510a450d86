"""Prometheus metrics at ``/metrics`` for the operators' own monitoring.

Fleet gauges come from the database (:mod:`controller.services.metrics`); this replica's own
counters come from its MQTT bridge and carry an ``instance`` label. A registry is built per
scrape, so nothing here is global state.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controller.api.deps import RuntimeDep
from controller.mqtt.bridge import BridgeStats
from controller.services.metrics import FleetMetrics, fleet_metrics

router = APIRouter(tags=["health"])


class _Snapshot(Collector):
    def __init__(self, fleet: FleetMetrics, bridge: BridgeStats | None, instance: str) -> None:
        self.fleet, self.bridge, self.instance = fleet, bridge, instance

    def collect(self) -> Iterable[Metric]:
        yield from _fleet(self.fleet)
        if self.bridge is not None:
            yield from _bridge(self.bridge, self.instance)


def _fleet(f: FleetMetrics) -> Iterable[Metric]:
    lockers = GaugeMetricFamily(
        "lockerfleet_lockers", "Active lockers by presence", labels=["presence"]
    )
    for presence, n in sorted(f.lockers.items()):
        lockers.add_metric([presence], n)
    yield lockers
    alarms = GaugeMetricFamily(
        "lockerfleet_alarms_open", "Open alarms by type and severity", labels=["type", "severity"]
    )
    for (type_, severity), n in sorted(f.open_alarms.items()):
        alarms.add_metric([type_, severity], n)
    yield alarms
    commands = GaugeMetricFamily("lockerfleet_commands", "Commands by state", labels=["state"])
    for state, n in sorted(f.commands.items()):
        commands.add_metric([state], n)
    yield commands
    yield GaugeMetricFamily(
        "lockerfleet_commands_due",
        "Commands waiting to be sent or answered (pending or sent)",
        value=f.commands.get("pending", 0) + f.commands.get("sent", 0),
    )
    yield GaugeMetricFamily(
        "lockerfleet_notifications_pending", "SMS waiting in the outbox",
        value=f.notifications_pending,
    )  # fmt: skip
    yield GaugeMetricFamily(
        "lockerfleet_fleet_lockdown", "1 while remote openings are locked down",
        value=1 if f.lockdown else 0,
    )  # fmt: skip
    latency = GaugeMetricFamily(
        "lockerfleet_open_command_latency_seconds",
        "Request-to-result time of door openings settled in the last 15 minutes",
        labels=["quantile"],
    )
    for q, seconds in sorted(f.open_latency_s.items()):
        latency.add_metric([str(q)], seconds)
    yield latency
    yield GaugeMetricFamily(
        "lockerfleet_open_command_latency_samples",
        "Door openings the latency quantiles are computed from",
        value=f.open_latency_count,
    )


def _bridge(s: BridgeStats, instance: str) -> Iterable[Metric]:
    counters = (
        ("lockerfleet_messages_received", "MQTT messages received", s.received),
        (
            "lockerfleet_messages_overflowed",
            "Messages dropped with the ingest's inbox full (lockers send them again)",
            s.overflowed,
        ),
        ("lockerfleet_events_ingested", "Sequenced messages stored (new)", s.stored),
        ("lockerfleet_events_duplicate", "Sequenced messages already stored", s.duplicates),
        ("lockerfleet_acks_published", "Acknowledgements published", s.acks_published),
        (
            "lockerfleet_publish_failures",
            "Acks and commands the broker did not confirm (sent again later)",
            s.publish_failures,
        ),
        ("lockerfleet_commands_published", "Command publications", s.commands_published),
        ("lockerfleet_ingest_batches", "Ingest batches committed", s.batches),
        (
            "lockerfleet_ingest_deferred",
            "Messages deferred: another replica held their locker",
            s.deferred,
        ),
        ("lockerfleet_ingest_batch_seconds", "Time spent storing batches", s.batch_seconds),
        ("lockerfleet_ack_seconds", "Time from publishing acks to their PUBACKs", s.ack_seconds),
    )
    for name, doc, value in counters:
        family = CounterMetricFamily(name, doc, labels=["instance"])
        family.add_metric([instance], value)
        yield family
    rejected = CounterMetricFamily(
        "lockerfleet_messages_rejected", "Messages rejected, by reason", labels=["instance", "code"]
    )
    for code, n in sorted(s.rejections_by_code.items()):
        rejected.add_metric([instance, code], n)
    yield rejected
    gauges: tuple[tuple[str, str, float], ...] = (
        ("lockerfleet_ingest_queue_depth", "Messages received, not yet ingested", s.queue_depth()),
        ("lockerfleet_broker_connected", "1 while connected to the broker", int(s.connected)),
        ("lockerfleet_ingest_last_batch_seconds", "Time of the last batch", s.last_batch_seconds),
    )
    for name, doc, reading in gauges:
        gauge = GaugeMetricFamily(name, doc, labels=["instance"])
        gauge.add_metric([instance], reading)
        yield gauge


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(runtime: RuntimeDep) -> Response:
    registry = CollectorRegistry(auto_describe=False)
    stats = runtime.bridge.stats if runtime.bridge is not None else None
    registry.register(
        _Snapshot(await fleet_metrics(runtime.ctx), stats, runtime.settings.instance_id)
    )
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
