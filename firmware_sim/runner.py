"""Running a fleet for a while, in this process or spread over several, and reporting on it.

:func:`run_fleet` starts an :class:`~firmware_sim.fleet.MqttFleet`, calls back with a
:class:`Status` about once a second, and stops after the duration or when the stop event is
set, returning a :class:`~firmware_sim.report.FleetReport`. :func:`run_processes` splits the
fleet into contiguous slices, runs one slice per worker process (``spawn``, so nothing is
inherited but the arguments), adds up their live status for the caller and merges their
reports. Workers ignore Ctrl-C; the parent stops them through a shared event.

Fault rules that pick ``count`` lockers at random are resolved to named lockers before the
split, so a fleet over several processes gets the same faults as in one.
"""

from __future__ import annotations

import dataclasses
import gc
import multiprocessing
import queue
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from firmware_sim.faults import FaultKind, FaultPlan
from firmware_sim.fleet import FleetOptions, MqttFleet
from firmware_sim.report import FleetReport, build_report, merge
from firmware_sim.spec import LockerSpec
from protocol.urls import BrokerAddress


class StopSignal(Protocol):
    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass(frozen=True, slots=True)
class Status:
    """A run's counters at one moment (summed over processes)."""

    lockers: int
    connected: int
    sent: int
    received: int
    reconnects: int
    errors: int
    faults: int
    elapsed_s: float

    def plus(self, other: Status) -> Status:
        return Status(
            self.lockers + other.lockers,
            self.connected + other.connected,
            self.sent + other.sent,
            self.received + other.received,
            self.reconnects + other.reconnects,
            self.errors + other.errors,
            self.faults + other.faults,
            max(self.elapsed_s, other.elapsed_s),
        )


EMPTY = Status(0, 0, 0, 0, 0, 0, 0, 0.0)


def resolve_counts(plan: FaultPlan, locker_ids: Sequence[str]) -> FaultPlan:
    """Return ``plan`` with every ``count`` rule turned into a rule naming its lockers."""
    rng = random.Random(plan.seed)
    rules = []
    for rule in plan.rules:
        if rule.count is not None and rule.fault.kind is not FaultKind.BROKER_OUTAGE:
            chosen = tuple(rng.sample(list(locker_ids), min(rule.count, len(locker_ids))))
            rule = dataclasses.replace(rule, lockers=chosen, count=None)
        rules.append(rule)
    return FaultPlan(tuple(rules), plan.seed)


def run_fleet(
    specs: Sequence[LockerSpec],
    broker: BrokerAddress,
    options: FleetOptions,
    *,
    faults: FaultPlan | None = None,
    duration_s: float | None = None,
    stop: StopSignal | None = None,
    on_status: Callable[[Status], None] | None = None,
) -> FleetReport:
    """Run ``specs`` as one fleet until ``duration_s`` passed or ``stop`` is set."""
    stop = stop or threading.Event()
    fleet = MqttFleet(specs, broker, options, faults=faults)
    # The fleet's objects (lockers, clients) live as long as this process: keep the cyclic
    # garbage collector from walking all of them again in every full collection.
    gc.freeze()
    fleet.start()
    began = time.monotonic()
    try:
        while not stop.is_set():
            elapsed = time.monotonic() - began
            if duration_s is not None and elapsed >= duration_s:
                break
            wait = 1.0 if duration_s is None else min(1.0, duration_s - elapsed)
            stop.wait(max(0.0, wait))
            if on_status is not None:
                st = fleet.stats()
                on_status(
                    Status(
                        st.lockers,
                        st.connected,
                        st.publishes,
                        st.received,
                        st.reconnects,
                        st.errors,
                        sum(st.faults.values()),
                        time.monotonic() - began,
                    )
                )
        stats = fleet.stats()
        counters = fleet.run(fleet.locker_counters, timeout=60)
    finally:
        fleet.stop()
    connected_at = fleet.all_connected_at
    return build_report(
        stats,
        counters,
        duration_s=time.monotonic() - began,
        all_connected_after_s=None if connected_at is None else connected_at - fleet.started_at,
    )


def _worker(
    index: int,
    specs: list[LockerSpec],
    broker: BrokerAddress,
    options: FleetOptions,
    faults: FaultPlan | None,
    duration_s: float | None,
    stop: Any,
    out: Any,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        report = run_fleet(
            specs,
            broker,
            options,
            faults=faults,
            duration_s=duration_s,
            stop=stop,
            on_status=lambda status: out.put(("status", index, status)),
        )
        out.put(("report", index, report))
    except Exception as exc:  # reported to the parent as one line
        out.put(("error", index, f"worker {index}: {exc}"))


def run_processes(
    specs: Sequence[LockerSpec],
    broker: BrokerAddress,
    options: FleetOptions,
    *,
    processes: int,
    faults: FaultPlan | None = None,
    duration_s: float | None = None,
    stop: StopSignal | None = None,
    on_status: Callable[[Status], None] | None = None,
) -> FleetReport:
    """Run ``specs`` over ``processes`` worker processes; return the merged report.

    Raises :class:`RuntimeError` if a worker failed (with its one-line reason).
    """
    if processes <= 1:
        return run_fleet(
            specs,
            broker,
            options,
            faults=faults,
            duration_s=duration_s,
            stop=stop,
            on_status=on_status,
        )
    ctx = multiprocessing.get_context("spawn")
    shared_stop = ctx.Event()
    results: Any = ctx.Queue()
    if faults is not None:
        faults = resolve_counts(faults, [s.locker_id for s in specs])
    n = len(specs)
    slices = [list(specs[k * n // processes : (k + 1) * n // processes]) for k in range(processes)]
    workers = []
    for k, part in enumerate(slices):
        own = dataclasses.replace(options, seed=options.seed + k)
        args = (k, part, broker, own, faults, duration_s, shared_stop, results)
        workers.append(ctx.Process(target=_worker, args=args, name=f"locker-sim-{k}"))
    for worker in workers:
        worker.start()
    latest: dict[int, Status] = {}
    reports: dict[int, FleetReport] = {}
    failures: list[str] = []
    try:
        while len(reports) + len(failures) < len(workers):
            if stop is not None and stop.is_set():
                shared_stop.set()
            try:
                kind, index, payload = results.get(timeout=0.5)
            except queue.Empty:
                if not any(w.is_alive() for w in workers) and results.empty():
                    failures.append("a worker process died without a report")
                    break
                continue
            if kind == "status":
                latest[index] = payload
                if on_status is not None:
                    total = EMPTY
                    for status in latest.values():
                        total = total.plus(status)
                    on_status(total)
            elif kind == "report":
                reports[index] = payload
            else:
                failures.append(str(payload))
                shared_stop.set()
    finally:
        shared_stop.set()
        for worker in workers:
            worker.join(30)
            if worker.is_alive():
                worker.terminate()
    if failures:
        raise RuntimeError(failures[0])
    return merge([reports[k] for k in sorted(reports)])
