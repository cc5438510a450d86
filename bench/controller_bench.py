"""Controller benchmarks on PostgreSQL and a real Mosquitto: deposit round trip, event ingest,
reconnect storm. Run on demand; prints figures and writes JSON to ``bench/results/``.

::

    .venv/bin/python bench/controller_bench.py            # all three, full sizes
    .venv/bin/python bench/controller_bench.py --quick    # smaller sizes (about a minute)
    .venv/bin/python bench/controller_bench.py --only ingest --profile

How each is measured (see ``docs/performance.md``, "Controller"):

* **deposit**: one controller (runtime + HTTP API) in this process, 200 simulated lockers
  (:class:`~firmware_sim.fleet.MqttFleet`, in a child process) whose attendant has *zero*
  human delays, 50 courier tasks (another child) each posting deposits one after another.
  Per deposit: the time from the POST to the commit that makes the parcel ``notified``, as
  PostgreSQL announces it (a trigger's NOTIFY, added to the benchmark's own schema), split
  into API answer, lock released at the locker (a locker observer), and door events stored
  and applied. Then the same loads on two controllers (a second process with its own API,
  one share group), the couriers spread over both (``--one-replica`` skips this).
* **ingest**: pre-built, valid protocol ``Event`` messages from many registered locker ids,
  published at QoS 1 over four lean connections (:mod:`raw_publisher`) in a child process,
  into one controller replica in a child process, while a bare paho subscriber (another
  child, QoS 1) drains the same stream. Durable rate:
  rows in ``device_messages`` counted in the database. Acks go back to the locker topics; the
  publisher process listens to them and checks a sample against the database (an ack for a
  sequence number not yet stored would be a violation). Then the same with two replicas (two
  processes, different ``instance_id``, one ``share_group``).
* **storm**: N simulated lockers (a fleet in a child process) connected and known online; the
  broker is stopped; every locker buffers events (wrong codes typed) and the controller's code
  cache version of every locker moves on (as when codes are issued during an outage), so each
  locker needs a full code sync; the broker is started again and the clock runs until every
  locker is online in the database on its new connection, has reported the current code cache
  version, and has nothing left unacknowledged in its buffer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import io
import json
import logging
import multiprocessing
import os
import platform
import pstats
import queue
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pydantic import SecretStr
from raw_publisher import RawPublisher
from sqlalchemy import event, text

from controller.db.engine import open_database
from controller.db.migrate import upgrade
from controller.demo.county import County, UserPlan, build_county
from controller.embedded_broker import MosquittoProcess
from controller.runtime import Runtime, build_runtime, tune_gc
from controller.services.context import Role
from controller.services.ingest import Inbound
from controller.services.lockers import CompartmentSpec
from controller.settings import Settings
from controller.testing.fleet import locker_spec
from controller.testing.http import serve_http
from controller.testing.seed import DEFAULT_LAYOUT, small_county_plan
from firmware_sim.compartments import Release
from firmware_sim.door import LOCK_ACTUATION_MS
from firmware_sim.fleet import FleetOptions, MqttFleet
from firmware_sim.locker import Locker
from firmware_sim.people import AttendantPolicy, Delays
from firmware_sim.spec import LockerSpec
from protocol.codec import encode
from protocol.messages import (
    CodeRejected,
    Event,
    EventData,
    OccupancyChanged,
    PowerChanged,
    PowerSource,
    SizeClass,
)
from protocol.topics import Channel, TopicLayout

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
RESULTS = Path(__file__).resolve().parent / "results"
BROKER_CONFIG = "max_connections -1\nmax_queued_messages 0\n"
SMALL_LAYOUT = [
    CompartmentSpec("A01", SizeClass.S),
    CompartmentSpec("B01", SizeClass.M),
    CompartmentSpec("C01", SizeClass.L),
    CompartmentSpec("D01", SizeClass.XL),
]
INSTANT = Delays((0, 0), (0, 0), (0, 0), (0, 0))
"""An attendant with no human time at all: the round trip measures only the system."""


# --- shared helpers -------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, float]:
    """Nearest-rank p50/p90/p99 and the max of ``values`` (milliseconds), rounded."""
    if not values:
        return {}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]

    return {
        "n": len(ordered),
        "p50": round(rank(50), 1),
        "p90": round(rank(90), 1),
        "p99": round(rank(99), 1),
        "max": round(ordered[-1], 1),
        "mean": round(sum(ordered) / len(ordered), 1),
    }


@contextlib.asynccontextmanager
async def pg_schema(base: str) -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL schema of our own; yields its URL, drops it afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = open_database(base)
    async with admin.engine.begin() as connection:
        await connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{base}?schema={schema}"
    try:
        db = open_database(url)
        await upgrade(db)
        await db.dispose()
        yield url
    finally:
        async with admin.engine.begin() as connection:
            await connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        await admin.dispose()


@contextlib.contextmanager
def mosquitto() -> Iterator[MosquittoProcess]:
    broker = MosquittoProcess(extra_config=BROKER_CONFIG)
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


def settings_kwargs(
    url: str, port: int, root: str, secret: str, instance: str = "bench-1"
) -> dict[str, Any]:
    """Production settings of one replica (plain values, so they cross process boundaries)."""
    return {
        "environment": "production",
        "database_url": url,
        "mqtt_url": f"mqtt://127.0.0.1:{port}",
        "topic_root": root,
        "secret_key": secret,
        "instance_id": instance,
        "share_group": "bench",
        # The remote-open guard (30/min per user, 300/min per carrier, 1,000/min for the
        # fleet) would cap the deposit benchmark at 16.7 deposits/s; lift it to measure the
        # system itself. The figures say what the limits mean.
        "open_limit_per_user_per_min": 0,
        "open_limit_per_carrier_per_min": 0,
        "open_limit_fleet_per_min": 0,
    }


def make_settings(kwargs: dict[str, Any]) -> Settings:
    values = dict(kwargs)
    secret = SecretStr(str(values.pop("secret_key")))
    return Settings(secret_key=secret, **values)


async def seed(
    runtime: Runtime,
    lockers: int,
    prefix: str,
    layout: list[CompartmentSpec],
    couriers: int = 0,
) -> County:
    plan = small_county_plan(lockers, prefix, layout)
    plan.users.extend(UserPlan(f"c{n:03d}", Role.COURIER, carrier="sf") for n in range(couriers))
    return await build_county(runtime, plan)


async def wait_for(
    check: Callable[[], Any], limit: float, what: str, interval: float = 0.1
) -> float:
    """Poll ``check`` (plain or async) until truthy; return the time.monotonic() it was."""
    deadline = time.monotonic() + limit
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {limit:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


async def scalar(url_db: Any, sql: str, **params: Any) -> Any:
    async with url_db.engine.connect() as connection:
        return (await connection.execute(text(sql), params)).scalar()


def git_commit() -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    return "unknown"


def spawn(target: Callable[..., None], *args: Any) -> tuple[SpawnProcess, Connection]:
    """Start ``target(*args, conn)`` in a fresh interpreter; return it and our end of a pipe."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=target, args=(*args, theirs), daemon=True)
    process.start()
    return process, ours


def expect(conn: Connection, timeout: float, what: str) -> Any:
    if not conn.poll(timeout):
        raise TimeoutError(f"no answer from {what} within {timeout:.0f} s")
    return conn.recv()


# --- (a) deposit round trip -----------------------------------------------------------------


NOTIFIED_TRIGGER = """
CREATE FUNCTION {schema}.bench_notified() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('{channel}',
                    NEW.id::text || ' ' || extract(epoch FROM NEW.state_changed_at)::text);
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER bench_notified AFTER UPDATE OF state ON {schema}.parcels FOR EACH ROW
  WHEN (NEW.state = 'notified' AND OLD.state IS DISTINCT FROM 'notified')
  EXECUTE FUNCTION {schema}.bench_notified();
"""
"""Added to the benchmark's own schema only: PostgreSQL tells the watcher when a parcel's
transaction reaching ``notified`` commits (a NOTIFY is delivered at commit)."""


def notify_channel(url: str) -> str:
    return "bench_" + url.rsplit("schema=", 1)[1]


async def install_notified_trigger(url: str) -> None:
    schema = url.rsplit("schema=", 1)[1]
    db = open_database(url)
    async with db.engine.begin() as connection:
        sql = NOTIFIED_TRIGGER.format(schema=schema, channel=notify_channel(url))
        function, trigger = sql.split("CREATE TRIGGER")
        await connection.exec_driver_sql(function)
        await connection.exec_driver_sql("CREATE TRIGGER" + trigger)
    await db.dispose()


class NotifiedWatcher:
    """Learns from PostgreSQL (LISTEN) the moment each parcel's ``notified`` commits: no
    polling load on the machine, and no polling interval in the figures."""

    def __init__(self, url: str) -> None:
        self.dsn = url.split("?", 1)[0]
        self.channel = notify_channel(url)
        self.waiting: dict[int, asyncio.Future[tuple[float, datetime]]] = {}
        self.early: dict[int, tuple[float, datetime]] = {}
        self.connection: Any = None

    async def start(self) -> None:
        self.connection = await asyncpg.connect(self.dsn)
        await self.connection.add_listener(self.channel, self._notified)

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        seen = time.time()
        parcel, epoch = payload.split()
        result = (seen, datetime.fromtimestamp(float(epoch), UTC))
        future = self.waiting.pop(int(parcel), None)
        if future is None:
            self.early[int(parcel)] = result  # committed before the courier had its answer
        elif not future.done():
            future.set_result(result)

    def watch(self, parcel_id: int) -> asyncio.Future[tuple[float, datetime]]:
        future: asyncio.Future[tuple[float, datetime]] = asyncio.get_running_loop().create_future()
        if parcel_id in self.early:
            future.set_result(self.early.pop(parcel_id))
        else:
            self.waiting[parcel_id] = future
        return future

    async def stop(self) -> None:
        if self.connection is not None:
            await self.connection.close()


def wall(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


DEPOSIT_KEYS = (
    "api",
    "command_at_locker",
    "stored_after_release",
    "total",
    "total_by_controller_clock",
)
Scenario = tuple[str, int, int, tuple[int, int]]
"""(name, couriers, deposits per courier, pause between deposits in ms)."""


def deposit_fleet_main(specs: list[LockerSpec], port: int, root: str, conn: Connection) -> None:
    """Child process: the 200 lockers, with an attendant who takes no time at all; reports
    when each compartment's lock was released (wall clock)."""
    from protocol.urls import BrokerAddress

    released: dict[tuple[str, str], float] = {}

    def observe(locker: Locker, release: Release) -> None:
        released[locker.locker_id, release.compartment] = time.time()

    options = FleetOptions(topic_root=root, attendant=AttendantPolicy(delays=INSTANT))
    fleet = MqttFleet(specs, BrokerAddress("127.0.0.1", port), options)
    for locker in fleet.lockers.values():
        locker.observers.append(observe)
    with fleet:
        conn.send("started")
        while conn.recv() == "released":
            conn.send(fleet.run(lambda: dict(released)))
    conn.send("stopped")


def couriers_main(base_urls: list[str], url: str, tokens: list[str], locker_ids: list[str],
                  scenarios: list[Scenario], conn: Connection) -> None:  # fmt: skip
    """Child process: the couriers (HTTP clients) and the watcher that sees parcels notified.
    Courier n talks to replica n mod len(base_urls), as a load balancer would spread them."""
    asyncio.run(_couriers(base_urls, url, tokens, locker_ids, scenarios, conn))


async def _couriers(base_urls: list[str], url: str, tokens: list[str], locker_ids: list[str],
                    scenarios: list[Scenario], conn: Connection) -> None:  # fmt: skip
    poller = NotifiedWatcher(url)
    await poller.start()
    counter = iter(range(10**9))
    refused: dict[str, int] = {}
    async with httpx.AsyncClient(
        timeout=30, limits=httpx.Limits(max_connections=2 * len(tokens))
    ) as api:

        async def courier(n: int, rounds: int, think: tuple[int, int],
                          samples: list[dict[str, Any]]) -> None:  # fmt: skip
            rng = random.Random(n * 7919 + len(samples))
            for round_no in range(rounds):
                await asyncio.sleep(rng.randint(*think) / 1000)
                while True:
                    number = next(counter)
                    body = {
                        "tracking_number": f"SF{9_000_000_000 + number}",
                        "locker_id": rng.choice(locker_ids),
                        "size": rng.choice("SSMML"),
                        "recipient_phone": f"135{number:08d}",
                        "consent_method": "sms_reply",
                    }
                    t0 = time.time()
                    response = await api.post(
                        f"{base_urls[n % len(base_urls)]}/api/v1/deposits",
                        headers={"Authorization": f"Bearer {tokens[n]}"},
                        json=body,
                    )
                    if response.status_code != 201:
                        code = str(response.json().get("error", {}).get("code"))
                        refused[code] = refused.get(code, 0) + 1
                        if sum(refused.values()) > 200:
                            raise RuntimeError(f"deposit: {response.text}")
                        await asyncio.sleep(0 if response.status_code == 409 else 1)
                        continue
                    break
                t_api = time.time()
                parcel = response.json()["parcel"]
                seen, changed_at = await asyncio.wait_for(poller.watch(parcel["id"]), 60)
                samples.append(
                    {
                        "key": (body["locker_id"], parcel["compartment"]),
                        "round": round_no,
                        "t0": t0,
                        "api": t_api,
                        "seen": seen,
                        "changed": wall(changed_at),
                    }
                )

        warmup: list[dict[str, Any]] = []
        await asyncio.gather(*(courier(n, 1, (0, 500), warmup) for n in range(10)))
        conn.send(("warmed up", 0.0, warmup, {}))  # the counters start from here...
        await asyncio.to_thread(conn.recv)  # ...once the controller has read them
        for name, count, rounds, think in scenarios:
            samples: list[dict[str, Any]] = []
            started = time.monotonic()
            refused_before = dict(refused)
            await asyncio.gather(*(courier(n, rounds, think, samples) for n in range(count)))
            turned_away = {k: v - refused_before.get(k, 0) for k, v in refused.items()}
            conn.send((name, time.monotonic() - started, samples, turned_away))
    await poller.stop()
    conn.send(("done", 0.0, refused, {}))


def deposit_figures(
    samples: list[dict[str, Any]], released: dict[tuple[str, str], float]
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {key: [] for key in DEPOSIT_KEYS}
    for s in samples:
        t0 = s["t0"]
        t_rel = released.get((s["key"][0], s["key"][1]), s["seen"])
        out["api"].append((s["api"] - t0) * 1000)
        # The firmware announces the release as it pulses the lock, and the benchmark's
        # attendant pulls the door open at that moment (before the spring would push it
        # open LOCK_ACTUATION_MS later): no hardware time is in the round trip.
        out["command_at_locker"].append((t_rel - t0) * 1000)
        out["stored_after_release"].append((s["seen"] - t_rel) * 1000)
        out["total"].append((s["seen"] - t0) * 1000)
        out["total_by_controller_clock"].append((s["changed"] - t0) * 1000)
    return out


def api_replica_main(kwargs: dict[str, Any], conn: Connection) -> None:
    """Child process: a second controller replica serving the API too (as in
    docker-compose.yml), for the deposit loads on two replicas."""
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    tune_gc()  # as `lockerfleet serve` does
    asyncio.run(_api_replica(kwargs, conn))


async def _api_replica(kwargs: dict[str, Any], conn: Connection) -> None:
    runtime = build_runtime(make_settings(kwargs))
    stack = contextlib.AsyncExitStack()
    async with stack:
        base_url = await stack.enter_async_context(serve_http(runtime, start=True))
        bridge = runtime.bridge
        assert bridge is not None
        await wait_for(lambda: bridge.stats.connected, 30, "the second replica's bridge")
        conn.send(base_url)
        await asyncio.to_thread(conn.recv)
        teardown = stack.pop_all()
        await bounded(teardown.aclose(), "stopping the second replica's API")
    await bounded(runtime.stop(), "stopping the second replica")
    conn.send("stopped")


async def bench_deposits(
    base: str, quick: bool, profile: bool, replicas: int = 1
) -> dict[str, Any]:
    """Four loads on one controller: one courier alone (where the time goes), 50 couriers
    pausing 5-15 s between deposits (a courier's own pace), the same pausing 1-3 s (stress),
    and 50 couriers back to back (saturation).

    The controller (runtime + HTTP API) runs in this process; the lockers and the couriers
    (with the watcher) each run in a child process, as they would on other machines. With
    ``replicas=2`` a second controller (runtime + HTTP API, same share group) runs in another
    child process, the couriers are spread over both APIs, and the lone-courier load is left
    out (it would exercise one replica only)."""
    install_task_dump()
    lockers, couriers = 200, 50
    scenarios: list[Scenario] = [
        *([("one_courier", 1, 10 if quick else 30, (0, 0))] if replicas == 1 else []),
        # A courier's own pace at a locker bank: a deposit every 5-15 s each (~5/s in all).
        ("paced_50_5_15s", couriers, 2 if quick else 4, (5000, 15000)),
        # Between the two: every 3-8 s each (~9/s).
        ("paced_50_3_8s", couriers, 2 if quick else 3, (3000, 8000)),
        # A stress pace: every 1-3 s each (~17/s, far above a county's daily volume).
        ("paced_50", couriers, 3 if quick else 8, (1000, 3000)),
        # Six rounds: nobody picks parcels up, and the 200 lockers' 1,800 compartments must
        # last all five loads (about 1,100 deposits); the last ones turn some attempts away
        # (``refused_attempts``).
        ("back_to_back_50", couriers, 3 if quick else 6, (0, 0)),
    ]
    secret = secrets.token_hex(32)
    root = f"bench-{uuid.uuid4().hex[:8]}/v1"
    result: dict[str, Any] = {
        "lockers": lockers,
        "attendant": "zero human delays (Delays((0,0),(0,0),(0,0),(0,0)))",
        "notified_seen_by": "LISTEN for a trigger's NOTIFY, delivered when the update commits",
        "simulated_lock_actuation_ms": LOCK_ACTUATION_MS,
        "replicas": replicas,
        "processes": (
            "controller | 200 lockers (MqttFleet) | 50 couriers (httpx) + watcher"
            if replicas == 1
            else "controller | controller | 200 lockers (MqttFleet) | 50 couriers (httpx) + watcher"
        ),
    }
    async with pg_schema(base) as url:
        await install_notified_trigger(url)
        with mosquitto() as broker:
            settings = make_settings(settings_kwargs(url, broker.port, root, secret))
            runtime = build_runtime(settings)
            started = time.monotonic()
            county = await seed(runtime, lockers, "DL", DEFAULT_LAYOUT, couriers)
            result["seed_seconds"] = round(time.monotonic() - started, 1)
            specs = [locker_spec(c, DEFAULT_LAYOUT) for c in county.lockers.values()]
            check = open_database(url)
            fleet, fleet_conn = spawn(deposit_fleet_main, specs, broker.port, root)
            second: tuple[SpawnProcess, Connection] | None = None
            stack = contextlib.AsyncExitStack()
            async with stack:
                base_urls = [await stack.enter_async_context(serve_http(runtime, start=True))]
                teardown = stack.pop_all()
                try:
                    if replicas == 2:
                        kwargs = settings_kwargs(url, broker.port, root, secret, "bench-2")
                        second = spawn(api_replica_main, kwargs)
                        base_urls.append(
                            await asyncio.to_thread(expect, second[1], 60, "the second replica")
                        )
                    await asyncio.to_thread(expect, fleet_conn, 60, "the fleet")
                    await wait_for(
                        lambda: _count_online(check, lockers), 60, "every locker online", 0.2
                    )
                    tokens = [county.tokens[f"c{n:03d}"] for n in range(couriers)]
                    load, load_conn = spawn(
                        couriers_main, base_urls, url, tokens, sorted(county.lockers), scenarios
                    )
                    census = SqlCensus(runtime.db.engine)
                    counted = census.snapshot()
                    cpu_before, wall_before = time.process_time(), time.monotonic()
                    others = {"fleet": fleet.pid or 0, "couriers": load.pid or 0}
                    if second is not None:
                        others["second_replica"] = second[0].pid or 0
                    others_before = {k: process_cpu_s(p) for k, p in others.items()}
                    batches_before = runtime.bridge.stats.batch_seconds if runtime.bridge else 0.0
                    machine_before = machine_cpu()
                    profiler = cProfile.Profile() if profile else None
                    if profiler is not None:
                        profiler.enable()
                    while True:
                        name, elapsed, samples, turned_away = await asyncio.to_thread(
                            expect, load_conn, 900, "the couriers"
                        )
                        if name == "done":
                            result["refusals"] = samples
                            break
                        if name == "warmed up":  # not counted in the first load's figures
                            counted = census.snapshot()
                            cpu_before, wall_before = time.process_time(), time.monotonic()
                            others_before = {k: process_cpu_s(p) for k, p in others.items()}
                            machine_before = machine_cpu()
                            if runtime.bridge is not None:
                                batches_before = runtime.bridge.stats.batch_seconds
                            load_conn.send("go")
                            continue
                        fleet_conn.send("released")
                        released = await asyncio.to_thread(expect, fleet_conn, 60, "the fleet")
                        figures = deposit_figures(samples, released)
                        one: dict[str, Any] = {
                            "couriers": next(c for n, c, _, _ in scenarios if n == name),
                            "think_ms": list(next(t for n, _, _, t in scenarios if n == name)),
                            "deposits": len(samples),
                            "seconds": round(elapsed, 2),
                            "deposits_per_s": round(len(samples) / elapsed, 1),
                            # Attempts refused (no free compartment at the locker chosen; the
                            # courier tries another): in no latency, in the load's CPU and SQL.
                            "refused_attempts": turned_away,
                        }
                        for key in DEPOSIT_KEYS:
                            one[f"{key}_ms"] = percentiles(figures[key])
                        # All 50 couriers start together: their first deposits arrive faster
                        # than the pace that follows. The same figure without them:
                        later = [
                            v for v, x in zip(figures["total"], samples, strict=True) if x["round"]
                        ]
                        if one["couriers"] > 1 and later:
                            one["total_ms_after_first_round"] = percentiles(later)
                        # With two replicas: the first's statements only, over all deposits.
                        one["sql" if replicas == 1 else "sql_first_replica"] = census.since(
                            counted, len(samples)
                        )
                        counted = census.snapshot()
                        # The controller's own CPU (API, bridge, background; this process
                        # holds nothing else busy) and the share of the time it was busy.
                        cpu, wall = time.process_time(), time.monotonic()
                        storing = runtime.bridge.stats.batch_seconds if runtime.bridge else 0.0
                        # With two replicas, these two are the first replica's only.
                        prefix = "" if replicas == 1 else "first_replica_"
                        one[f"{prefix}ingest_storing_ms_per_deposit"] = round(
                            (storing - batches_before) * 1000 / max(1, len(samples)), 1
                        )
                        busy = (cpu - cpu_before) / max(1e-9, wall - wall_before)
                        busy_key = f"{prefix}cpu_busy" if prefix else "controller_cpu_busy"
                        one[busy_key] = round(busy, 2)
                        spent = cpu - cpu_before  # by every replica
                        for k, p in others.items():  # the lockers', couriers', 2nd replica's
                            used = process_cpu_s(p)
                            one[f"{k}_cpu_busy"] = round(
                                (used - others_before[k]) / max(1e-9, wall - wall_before), 2
                            )
                            if k == "second_replica":
                                spent += used - others_before[k]
                            others_before[k] = used
                        one["controller_cpu_ms_per_deposit"] = round(
                            spent * 1000 / max(1, len(samples)), 1
                        )
                        # The whole machine (PostgreSQL and Mosquitto included): its CPU per
                        # deposit and how busy it was, out of os.cpu_count() CPUs.
                        machine = machine_cpu()
                        busy = machine[0] - machine_before[0]
                        one["machine_cpu_ms_per_deposit"] = round(
                            busy * 1000 / max(1, len(samples)), 1
                        )
                        one["machine_busy"] = round(
                            busy / max(1e-9, machine[1] - machine_before[1]), 2
                        )
                        machine_before = machine
                        cpu_before, wall_before, batches_before = cpu, wall, storing
                        first = min((x["t0"] for x in samples), default=0.0)
                        one["samples"] = [  # when each started (s) and its times (ms)
                            [round(x["t0"] - first, 3), *(round(figures[k][i], 1)
                                                           for k in DEPOSIT_KEYS)]
                            for i, x in enumerate(samples)
                        ]  # fmt: skip
                        one["sample_columns"] = ["start_s", *DEPOSIT_KEYS]
                        result[name] = one
                        print_deposit(name, one)
                    if profiler is not None:
                        profiler.disable()
                        result["profile"] = str(write_profile(profiler, "deposit"))
                    load.join(30)
                    if runtime.bridge is not None:
                        result["ingest_batches"] = runtime.bridge.stats.batches
                        result["mean_batch"] = round(
                            runtime.bridge.stats.received / max(1, runtime.bridge.stats.batches),
                            1,
                        )
                finally:
                    with contextlib.suppress(OSError):
                        fleet_conn.send("stop")
                    fleet.join(20)
                    if fleet.is_alive():
                        fleet.kill()
                    if second is not None:
                        with contextlib.suppress(OSError):
                            second[1].send("stop")
                        with contextlib.suppress(TimeoutError, EOFError, OSError):
                            await asyncio.to_thread(expect, second[1], 60, "the second replica")
                        second[0].join(10)
                        if second[0].is_alive():
                            second[0].kill()
                    await bounded(teardown.aclose(), "stopping the API")
            await bounded(runtime.stop(), "stopping the controller")
            await check.dispose()
    return result


def write_profile(profiler: cProfile.Profile, what: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    path = RESULTS / f"controller-{what}-profile-{stamp}.txt"
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(80)
    path.write_text(out.getvalue())
    return path


def print_deposit(name: str, d: dict[str, Any]) -> None:
    def pair(key: str) -> str:
        return f"{d[key + '_ms']['p50']}/{d[key + '_ms']['p99']}"

    if "second_replica_cpu_busy" in d:
        busy = (
            f"over both replicas (busy: first {d['first_replica_cpu_busy']:.0%}, second "
            f"{d['second_replica_cpu_busy']:.0%}"
        )
        sql, census = "the first replica's SQL (about half) per deposit", d["sql_first_replica"]
    else:
        busy = f"({d['controller_cpu_busy']:.0%} busy"
        sql, census = "SQL per deposit", d["sql"]
    after = d.get("total_ms_after_first_round")
    later = f" (after the first round {after['p50']}/{after['p99']})" if after else ""
    print(
        f"  {name}: {d['deposits']} deposits ({d['deposits_per_s']}/s); p50/p99 ms: "
        f"total {pair('total')}{later}; API answer {pair('api')}, command at the locker "
        f"{pair('command_at_locker')}, door events stored after release "
        f"{pair('stored_after_release')}; controller CPU {d['controller_cpu_ms_per_deposit']} "
        f"ms per deposit {busy}; lockers' process {d['fleet_cpu_busy']:.0%}, couriers' "
        f"{d['couriers_cpu_busy']:.0%}); {sql}: {census['statements_per_deposit']} "
        f"statements, {census['commits_per_deposit']} commits; "
        f"{census['connections_opened']} database connections opened; "
        f"{sum(d['refused_attempts'].values())} attempts refused; the machine "
        f"{d['machine_busy']:.0%} busy, {d['machine_cpu_ms_per_deposit']} ms CPU per deposit "
        f"in all",
        flush=True,
    )


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0.0 where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = values[3] + values[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / tick, sum(values) / tick


class SqlCensus:
    """Counts the controller's SQL statements and commits (a round trip each), by statement,
    and the connections its pool opened (each one is a connect, and a prepare of every
    statement it then runs)."""

    def __init__(self, engine: Any) -> None:
        self.statements: dict[str, int] = {}
        self.by_task: dict[str, int] = {}
        self.commits = 0
        self.connects = 0
        event.listen(engine.sync_engine, "before_cursor_execute", self._statement)
        event.listen(engine.sync_engine, "commit", self._commit)
        event.listen(engine.sync_engine, "connect", self._connect)

    def _connect(self, *_: Any) -> None:
        self.connects += 1

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        key = " ".join(statement.split())[:90]
        self.statements[key] = self.statements.get(key, 0) + 1
        task = asyncio.current_task()
        name = task.get_name() if task is not None else "-"
        who = name if not name.startswith("Task-") else "api/other"
        self.by_task[who] = self.by_task.get(who, 0) + 1

    def _commit(self, _conn: Any) -> None:
        self.commits += 1

    def snapshot(self) -> tuple[dict[str, int], int, dict[str, int], int]:
        return dict(self.statements), self.commits, dict(self.by_task), self.connects

    def since(
        self, before: tuple[dict[str, int], int, dict[str, int], int], per: int
    ) -> dict[str, Any]:
        """Statements and commits since ``before``, per deposit, with the commonest."""
        tasks = {k: v - before[2].get(k, 0) for k, v in self.by_task.items()}
        counts = {k: v - before[0].get(k, 0) for k, v in self.statements.items()}
        counts = {k: v for k, v in counts.items() if v}
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:60]
        return {
            "statements_per_deposit": round(sum(counts.values()) / max(1, per), 1),
            "commits_per_deposit": round((self.commits - before[1]) / max(1, per), 1),
            "connections_opened": self.connects - before[3],
            "statements_per_deposit_by_task": {
                k: round(v / max(1, per), 1) for k, v in sorted(tasks.items()) if v
            },
            "commonest_per_deposit": [[k, round(v / max(1, per), 2)] for k, v in top],
        }


async def bounded(step: Coroutine[Any, Any, Any], what: str, limit: float = 30) -> None:
    """Run a teardown step as a task of its own and wait for it, never hanging the benchmark.

    On Python 3.11 a cancelled ``asyncio.wait_for`` can swallow the cancellation when its inner
    future completes at the same moment; ``MqttBridge._ingest`` then goes back to waiting on
    its queue and ``Runtime.stop()`` waits for it forever. Tasks left "cancelling" like that are
    cancelled once more here (and counted in :data:`NUDGES`).
    """
    task = asyncio.create_task(step)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        done, _ = await asyncio.wait({task}, timeout=3)
        if done:
            with contextlib.suppress(Exception):
                task.result()
            return
        stuck = [t for t in asyncio.all_tasks() if t.cancelling() and not t.done()]
        for t in stuck:
            NUDGES.append(f"{what}: {t.get_name()} {t.get_coro()!r:.120}")
            t.cancel()
    print(f"  warning: {what} took more than {limit:.0f} s; left behind", flush=True)


NUDGES: list[str] = []
"""Tasks that ignored a cancellation during teardown (see :func:`bounded`)."""


async def _count_online(db: Any, want: int) -> bool:
    online = await scalar(db, "SELECT count(*) FROM lockers WHERE online")
    return int(online or 0) >= want


# --- (b) event ingest -----------------------------------------------------------------------


def _event_data(seq: int) -> EventData:
    if seq % 3 == 0:
        return OccupancyChanged("A01", occupied=seq % 2 == 0)
    if seq % 3 == 1:
        return PowerChanged(PowerSource.MAINS, 100)
    return CodeRejected(attempts=1)


def build_events(
    root: str, lockers: list[str], boot: int, per_locker: int
) -> list[tuple[str, bytes]]:
    """Every locker's events 1..per_locker, interleaved across lockers as a fleet sends them."""
    layout = TopicLayout(root)
    topics = {lid: layout.locker(lid, Channel.EVENT) for lid in lockers}
    now = int(time.time() * 1000)
    out = []
    for seq in range(1, per_locker + 1):
        for lid in lockers:
            event = Event.of(lid, boot, seq, now + seq, _event_data(seq))
            out.append((topics[lid], encode(event)))
    return out


def _paho(name: str) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=name,
        protocol=MQTTProtocolVersion.MQTTv311,
        clean_session=True,
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    return client


def _ack_checker(url: str, checks: queue.Queue[tuple[str, int, int, int] | None],
                 result: dict[str, int]) -> None:  # fmt: skip
    """Thread: for each sampled ack, count the acknowledged rows in the database."""

    async def run() -> None:
        db = open_database(url)
        try:
            while True:
                item = await asyncio.to_thread(checks.get)
                if item is None:
                    return
                locker_id, boot, first, last = item
                stored = await scalar(
                    db,
                    "SELECT count(*) FROM device_messages WHERE locker_id = :l AND boot_id = :b "
                    "AND seq BETWEEN :f AND :t",
                    l=locker_id,
                    b=boot,
                    f=first,
                    t=last,
                )
                result["checked"] += 1
                if int(stored or 0) < last - first + 1:
                    result["violations"] += 1
        finally:
            await db.dispose()

    asyncio.run(run())


def publisher_main(port: int, root: str, lockers: list[str], boot: int, per_locker: int,
                   clients: int, url: str, conn: Connection) -> None:  # fmt: skip
    """Child process: publish the pre-built events; listen to the acks and check a sample.

    The events go out over ``clients`` lean connections (:mod:`raw_publisher`: the bytes a
    paho client would send, for a fraction of its CPU), each with 1,000 publishes in flight."""
    events = build_events(root, lockers, boot, per_locker)
    counts = {"acks": 0}
    acked: dict[str, set[int]] = {}
    check_result = {"checked": 0, "violations": 0}
    checks: queue.Queue[tuple[str, int, int, int] | None] = queue.Queue()

    def on_ack(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        ack = json.loads(message.payload)
        if ack.get("boot_id") != boot:
            return
        mine = acked.setdefault(ack["locker_id"], set())
        for r in ack["ranges"]:
            mine.update(range(r["first"], r["last"] + 1))
        counts["acks"] += 1
        if counts["acks"] % 10 == 1:
            last = ack["ranges"][-1]
            checks.put((ack["locker_id"], boot, last["first"], last["last"]))

    checker = threading.Thread(target=_ack_checker, args=(url, checks, check_result), daemon=True)
    checker.start()
    listener = _paho(f"bench-acks-{boot}-{os.getpid()}")
    listener.on_message = on_ack
    listener.connect("127.0.0.1", port)
    listener.subscribe(f"{root}/locker/+/ack", qos=1)
    listener.loop_start()
    publishers = [
        RawPublisher("127.0.0.1", port, f"bench-pub-{boot}-{n}-{os.getpid()}")
        for n in range(clients)
    ]
    # Each locker's events on one connection, in order, as one locker publishes them.
    topics = dict.fromkeys(topic for topic, _ in events)
    connection_of = {topic: n % clients for n, topic in enumerate(topics)}
    shares = [
        publisher.prepare([e for e in events if connection_of[e[0]] == n])
        for n, publisher in enumerate(publishers)
    ]
    time.sleep(0.5)
    conn.send("ready")
    conn.recv()  # go
    cpu_before = time.process_time()
    started = time.time()
    threads = [threading.Thread(target=p.publish) for p in publishers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for publisher, share in zip(publishers, shares, strict=True):
        if not publisher.wait_acked(share, max(1.0, 300 - (time.time() - started))):
            raise RuntimeError(f"the broker acknowledged {publisher.acked} of {share} publishes")
    last_puback = max(p.last_ack for p in publishers)
    publish_cpu_s = time.process_time() - cpu_before
    conn.send({"publish_started": started, "last_puback": last_puback})
    conn.recv()  # finish: wait for the outstanding acks
    deadline = time.time() + 20
    while time.time() < deadline and sum(len(s) for s in acked.values()) < len(events):
        time.sleep(0.1)
    checks.put(None)
    checker.join(30)
    for publisher in publishers:
        publisher.close()
    listener.loop_stop()
    listener.disconnect()
    conn.send(
        {
            "published": len(events),
            "pubacks": sum(p.acked for p in publishers),
            "publish_cpu_s": round(publish_cpu_s, 2),  # the whole process, ack checks included
            "acks": counts["acks"],
            "acked_seqs": sum(len(s) for s in acked.values()),
            "ack_checks": check_result["checked"],
            "acked_before_stored": check_result["violations"],
        }
    )


def bare_main(port: int, root: str, expected: int, conn: Connection) -> None:
    """Child process: a bare paho subscriber draining the event stream (QoS 1)."""
    seen = {"n": 0, "first": 0.0, "last": 0.0}
    subscribed = threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.time()
        if seen["n"] == 0:
            seen["first"] = now
        seen["n"] += 1
        seen["last"] = now

    client = _paho(f"bench-bare-{os.getpid()}")
    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", port)
    client.subscribe(f"{root}/locker/+/event", qos=1)
    client.loop_start()
    subscribed.wait(10)
    conn.send("ready")
    while seen["n"] < expected and not conn.poll(0.05):
        pass
    client.loop_stop()
    client.disconnect()
    conn.send({"received": seen["n"], "first": seen["first"], "last": seen["last"]})


def replica_main(kwargs: dict[str, Any], profile: str, conn: Connection) -> None:
    """Child process: one controller replica (the bridge and the background loops)."""
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    tune_gc()  # as `lockerfleet serve` does
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
    asyncio.run(_replica(kwargs, conn))
    if profile:
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(60)
        Path(profile).write_text(out.getvalue())


async def _replica(kwargs: dict[str, Any], conn: Connection) -> None:
    runtime = build_runtime(make_settings(kwargs))
    await runtime.start()
    bridge = runtime.bridge
    assert bridge is not None
    await wait_for(lambda: bridge.stats.connected, 30, "the bridge connected")
    conn.send("ready")
    await asyncio.to_thread(conn.recv)
    s = bridge.stats
    report = {
        "instance": kwargs["instance_id"],
        "received": s.received,
        "stored": s.stored,
        "duplicates": s.duplicates,
        "rejected": s.rejected,
        "batches": s.batches,
        "acks_published": s.acks_published,
        "mean_batch": round(s.received / s.batches, 1) if s.batches else 0,
        "batch_seconds": round(s.batch_seconds, 2),
        "ack_seconds": round(s.ack_seconds, 2),
        "deferred": s.deferred,
        "overflowed": s.overflowed,
        "lanes": bridge.lane_count(),
        "connects": s.connects,
    }
    await bounded(runtime.stop(), "stopping a replica")
    report["teardown_nudges"] = list(NUDGES)
    conn.send(report)


async def ingest_phase(
    url: str, broker: MosquittoProcess, root: str, secret: str, lockers: list[str], boot: int,
    per_locker: int, replicas: int, profile: str,
) -> dict[str, Any]:  # fmt: skip
    """One phase: ``replicas`` replicas store what the publisher sends, beside the bare
    subscriber. Besides the rates it reports the CPU every process used from the go to the last
    row stored, and how busy the whole machine was meanwhile."""
    port = broker.port
    total = len(lockers) * per_locker
    children: list[tuple[SpawnProcess, Connection]] = []
    for n in range(replicas):
        kwargs = settings_kwargs(url, port, root, secret, f"bench-replica-{n + 1}")
        children.append(spawn(replica_main, kwargs, profile if n == 0 else ""))
    for _, conn in children:
        expect(conn, 60, "a replica")
    bare, bare_conn = spawn(bare_main, port, root, total)
    pub, pub_conn = spawn(publisher_main, port, root, lockers, boot, per_locker, 4, url)
    expect(bare_conn, 30, "the bare subscriber")
    expect(pub_conn, 120, "the publisher")
    db = open_database(url)
    watched = {f"replica_{n + 1}": p.pid for n, (p, _) in enumerate(children)}
    watched |= {"bare": bare.pid, "publisher": pub.pid}
    if broker.process is not None:
        watched["mosquitto"] = broker.process.pid
    try:
        cpu_before = {k: process_cpu_s(pid) for k, pid in watched.items() if pid}
        machine_before = machine_cpu()
        pub_conn.send("go")
        go = time.time()
        sql = "SELECT count(*) FROM device_messages WHERE boot_id = :b"
        stored_at = go
        stored = 0
        deadline = time.monotonic() + 60 + total / 1000
        # Until everything is stored, or nothing more was stored for 15 s (a replica that lost
        # its session loses what the broker held for it; these publishers never resend).
        while time.monotonic() < deadline and time.time() - stored_at < 15:
            count = int(await scalar(db, sql, b=boot) or 0)
            if count > stored:
                stored, stored_at = count, time.time()
            if stored >= total:
                break
            await asyncio.sleep(0.05)
        cpu = {k: round(process_cpu_s(pid) - cpu_before[k], 2) for k, pid in watched.items() if pid}
        machine_after = machine_cpu()
        published = expect(pub_conn, 300, "the publisher")
        bare_report = expect(bare_conn, 60, "the bare subscriber")
        pub_conn.send("finish")
        pub_report = expect(pub_conn, 60, "the publisher")
        replica_reports = []
        for _, conn in children:
            conn.send("stop")
            replica_reports.append(expect(conn, 60, "a replica"))
    finally:
        await db.dispose()
        for process in [p for p, _ in children] + [bare, pub]:
            process.join(10)
            if process.is_alive():
                process.kill()
    start = published["publish_started"]
    durable_s = stored_at - start
    bare_s = bare_report["last"] - start
    durable_rate = stored / durable_s if durable_s > 0 else 0.0
    bare_rate = bare_report["received"] / bare_s if bare_s > 0 else 0.0
    return {
        "replicas": replicas,
        "lockers": len(lockers),
        "events": total,
        "stored": stored,
        "publish_rate": round(total / max(published["last_puback"] - start, 1e-9)),
        "durable_rate": round(durable_rate),
        "durable_seconds": round(durable_s, 2),
        "bare_rate": round(bare_rate),
        "bare_received": bare_report["received"],
        "durable_over_bare": round(durable_rate / bare_rate, 2) if bare_rate else None,
        "publisher": pub_report,
        "replica_reports": replica_reports,
        "cpu_seconds": cpu,
        "replica_cpu_us_per_event": round(
            sum(v for k, v in cpu.items() if k.startswith("replica")) / max(stored, 1) * 1e6
        ),
        "machine_busy": round(
            (machine_after[0] - machine_before[0])
            / max(machine_after[1] - machine_before[1], 1e-9),
            2,
        ),
    }


async def bench_ingest(base: str, quick: bool, profile: bool) -> dict[str, Any]:
    install_task_dump()
    lockers, per_locker = (200, 100) if quick else (1000, 60)
    secret = secrets.token_hex(32)
    root = f"bench-{uuid.uuid4().hex[:8]}/v1"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    async with pg_schema(base) as url:
        with mosquitto() as broker:
            runtime = build_runtime(make_settings(settings_kwargs(url, broker.port, root, secret)))
            county = await seed(runtime, lockers, "IN", SMALL_LAYOUT)
            await runtime.stop()
            ids = sorted(county.lockers)
            phases = []
            for boot, replicas in ((1, 1), (2, 2)):
                path = ""
                if profile and replicas == 1:
                    RESULTS.mkdir(parents=True, exist_ok=True)
                    path = str(RESULTS / f"controller-ingest-profile-{stamp}.txt")
                phase = await ingest_phase(
                    url, broker, root, secret, ids, boot, per_locker, replicas, path
                )
                if path:
                    phase["profile"] = path
                phases.append(phase)
                print_ingest(phase)
            alone = [
                await ingest_without_mqtt(
                    url, broker.port, root, secret, ids, per_locker, boot, lanes
                )
                for boot, lanes in ((3, 1), (4, 4))
            ]
    return {
        "single": phases[0],
        "two_replicas": phases[1],
        "without_mqtt": alone[0],
        "without_mqtt_lanes": alone[1],
    }


async def ingest_without_mqtt(
    url: str, port: int, root: str, secret: str, lockers: list[str], per_locker: int,
    boot: int, lanes: int,
) -> dict[str, Any]:  # fmt: skip
    """The same events through ``Ingest.handle`` directly, in batches of 1,000, no broker:
    what the database path alone sustains (acks are built and signed, not published). With
    ``lanes`` > 1 the lockers are split among that many batch loops running side by side, as
    the bridge's ingest lanes do."""
    runtime = build_runtime(make_settings(settings_kwargs(url, port, root, secret, "bench-alone")))
    bridge = runtime.bridge
    assert bridge is not None
    now = datetime.now(UTC)
    inbound = [Inbound(t, p, now) for t, p in build_events(root, lockers, boot, per_locker)]
    size = runtime.settings.ingest_batch_size
    lane_of = {locker_id: n % lanes for n, locker_id in enumerate(lockers)}
    prefix = len(root) + len("/locker/")
    split: list[list[Inbound]] = [[] for _ in range(lanes)]
    for item in inbound:
        split[lane_of[item.topic[prefix:].split("/", 1)[0]]].append(item)
    stored = acks = 0

    async def lane(items: list[Inbound]) -> None:
        nonlocal stored, acks
        for start in range(0, len(items), size):
            report = await bridge.ingest.handle(items[start : start + size])
            stored += report.stored
            acks += len(report.acks)

    started = time.monotonic()
    await asyncio.gather(*(lane(items) for items in split))
    elapsed = time.monotonic() - started
    await bounded(runtime.stop(), "stopping the controller")
    result = {"events": len(inbound), "stored": stored, "acks": acks, "lanes": lanes,
              "seconds": round(elapsed, 2), "rate": round(stored / elapsed)}  # fmt: skip
    print(
        f"  ingest without MQTT, {lanes} lane(s): {stored}/{len(inbound)} stored at "
        f"{result['rate']}/s in batches of {size} ({acks} acks signed)",
        flush=True,
    )
    return result


def print_ingest(phase: dict[str, Any]) -> None:
    shares = ", ".join(
        f"{r['instance']} stored {r['stored']} in {r['batches']} batches "
        f"({r['batch_seconds']} s storing, {r['ack_seconds']} s acking, "
        f"{r['deferred']} deferred, {r['overflowed']} dropped with the inbox full, "
        f"{r['lanes']} lanes)"
        for r in phase["replica_reports"]
    )
    pub = phase["publisher"]
    print(
        f"  ingest x{phase['replicas']}: {phase['stored']}/{phase['events']} stored, "
        f"durable {phase['durable_rate']}/s, bare {phase['bare_rate']}/s "
        f"(ratio {phase['durable_over_bare']}), published {phase['publish_rate']}/s "
        f"({pub['publish_cpu_s']} s publisher process CPU); "
        f"acks {pub['acks']} covering {pub['acked_seqs']} seqs, "
        f"{pub['acked_before_stored']} of {pub['ack_checks']} sampled acks ahead of the rows; "
        f"{shares}; replica CPU {phase['replica_cpu_us_per_event']} us/event, CPU s "
        f"{phase['cpu_seconds']}, machine {phase['machine_busy']:.0%} busy",
        flush=True,
    )


# --- (c) reconnect storm --------------------------------------------------------------------


def fleet_main(specs: list[LockerSpec], port: int, root: str, conn: Connection) -> None:
    """Child process: a fleet of lockers answering commands from the benchmark over a pipe."""
    from protocol.urls import BrokerAddress

    options = FleetOptions(
        topic_root=root,
        keepalive_s=30,
        attendant=None,
        connect_window=1000,
        reconnect_min_ms=500,
        reconnect_max_ms=4_000,
    )
    fleet = MqttFleet(specs, BrokerAddress("127.0.0.1", port), options)

    def snapshot() -> dict[str, int]:
        views = [locker.view() for locker in fleet.lockers.values()]
        stats = fleet._stats()
        return {
            "connected": fleet.connected_count(),
            "pending": sum(v.pending_events for v in views),
            "in_flight": sum(v.in_flight for v in views),
            "with_pending": sum(1 for v in views if v.pending_events),
            "connacks": stats.connacks,
            "reconnects": stats.reconnects,
            "errors": stats.errors,
        }

    def wrong_codes(times: int) -> int:
        for locker in fleet.lockers.values():
            for _ in range(times):
                locker.keypad_enter("000000")
        return times * len(fleet.lockers)

    with fleet:
        conn.send("started")
        while True:
            command, arg = conn.recv()
            if command == "stats":
                conn.send(fleet.run(snapshot, timeout=60))
            elif command == "wrong_codes":
                conn.send(fleet.run(functools.partial(wrong_codes, int(arg)), timeout=60))
            else:
                break
    conn.send("stopped")


async def bench_storm(base: str, quick: bool, profile: bool = False) -> dict[str, Any]:
    install_task_dump()
    lockers = 500 if quick else 5000
    outage_s = 5.0 if quick else 10.0
    buffered_per_locker = 3
    secret = secrets.token_hex(32)
    root = f"bench-{uuid.uuid4().hex[:8]}/v1"
    result: dict[str, Any] = {"lockers": lockers, "outage_s": outage_s}
    async with pg_schema(base) as url:
        with mosquitto() as broker:
            runtime = build_runtime(make_settings(settings_kwargs(url, broker.port, root, secret)))
            started = time.monotonic()
            county = await seed(runtime, lockers, "ST", SMALL_LAYOUT)
            result["seed_seconds"] = round(time.monotonic() - started, 1)
            print(
                f"  storm: {lockers} lockers registered in {result['seed_seconds']} s", flush=True
            )
            specs = [locker_spec(c, SMALL_LAYOUT) for c in county.lockers.values()]
            db = open_database(url)
            await runtime.start()
            restarts: list[str] = []
            watchdog = asyncio.create_task(bridge_watchdog(runtime, restarts))
            fleet, conn = spawn(fleet_main, specs, broker.port, root)
            try:
                await asyncio.to_thread(expect, conn, 120, "the fleet")
                t0 = time.monotonic()

                def ask_stats() -> dict[str, int]:
                    conn.send(("stats", None))
                    answer: dict[str, int] = expect(conn, 120, "the fleet")
                    return answer

                async def fleet_stats() -> dict[str, int]:
                    # In a thread: the controller runs on this event loop meanwhile.
                    return await asyncio.to_thread(ask_stats)

                await wait_for(lambda: _count_online(db, lockers), 300, "every locker online", 0.5)
                result["initial_connect_s"] = round(time.monotonic() - t0, 1)
                async with db.engine.connect() as connection:
                    before: dict[str, int] = dict(
                        (
                            await connection.execute(
                                text("SELECT id, presence_connection FROM lockers")
                            )
                        ).all()
                    )

                async def buffers_empty() -> bool:
                    return (await fleet_stats())["pending"] == 0

                async def disconnected() -> bool:
                    return (await fleet_stats())["connected"] == 0

                await wait_for(buffers_empty, 120, "initial buffers empty", 0.5)
                print(f"  storm: all online after {result['initial_connect_s']} s", flush=True)

                broker.stop()
                stopped = time.monotonic()
                await wait_for(disconnected, 60, "fleet disconnected", 0.2)
                conn.send(("wrong_codes", buffered_per_locker))
                result["buffered_events"] = await asyncio.to_thread(expect, conn, 120, "the fleet")
                async with db.engine.begin() as connection:
                    await connection.execute(
                        text("UPDATE lockers SET code_cache_version = code_cache_version + 1")
                    )
                await asyncio.sleep(max(0.0, outage_s - (time.monotonic() - stopped)))
                broker.start()
                restarted = time.monotonic()
                profiler = cProfile.Profile() if profile else None
                if profiler is not None:
                    profiler.enable()
                milestones: dict[str, float] = {}
                trace: list[dict[str, Any]] = []
                deadline = restarted + (90 if quick else 150)
                while time.monotonic() < deadline:
                    fs = await fleet_stats()
                    async with db.engine.connect() as connection:
                        rows = (
                            await connection.execute(
                                text(
                                    "SELECT id, online, presence_connection, "
                                    "code_cache_reported = code_cache_version FROM lockers"
                                )
                            )
                        ).all()
                    on_new = sum(1 for r in rows if r[1] and r[2] > before[r[0]])
                    synced = sum(1 for r in rows if r[3])
                    now = time.monotonic() - restarted
                    point = {"t": round(now, 1), "db_online_new_connection": on_new,
                             "code_cache_synced": synced, **fs}  # fmt: skip
                    trace.append(point)
                    for name, done in (
                        ("fleet_connected", fs["connected"] == lockers),
                        ("db_online", on_new == lockers),
                        ("codes_synced", synced == lockers),
                        ("buffers_empty", fs["pending"] == 0 and fs["in_flight"] == 0),
                    ):
                        if done and name not in milestones:
                            milestones[name] = round(now, 1)
                    if len(milestones) == 4:
                        break
                    await asyncio.sleep(0.5)
                if profiler is not None:
                    profiler.disable()
                    result["profile"] = str(write_profile(profiler, "storm"))
                result["milestones_s_after_restart"] = milestones
                result["whole_s_after_restart"] = (
                    max(milestones.values()) if len(milestones) == 4 else None
                )
                result["trace"] = trace
                result["bridge_restarted_by_bench"] = restarts
                bridge = runtime.bridge
                if bridge is not None:
                    s = bridge.stats
                    result["bridge"] = {
                        "received": s.received, "stored": s.stored, "batches": s.batches,
                        "connects": s.connects, "commands_published": s.commands_published,
                        "publish_failures": s.publish_failures,
                        "acks_published": s.acks_published,
                    }  # fmt: skip
                conn.send(("stop", None))
                expect(conn, 60, "the fleet")
            finally:
                fleet.join(20)
                if fleet.is_alive():
                    fleet.kill()
                watchdog.cancel()
                await bounded(runtime.stop(), "stopping the controller")
                await db.dispose()
    return result


async def bridge_watchdog(runtime: Runtime, restarts: list[str]) -> None:
    """Start the MQTT bridge again whenever its task has ended.

    ``MqttBridge.run`` once caught only a bare ``aiomqtt.MqttError`` while a lost connection
    surfaces from its ``TaskGroup`` as an ``ExceptionGroup``, so the bridge task ended and the
    controller never reconnected after a broker restart (fixed in fc8c706). Kept as a guard:
    every restart it makes is recorded in the results (``bridge_restarted_by_bench``).
    """
    bridge = runtime.bridge
    assert bridge is not None
    while True:
        for n, task in enumerate(runtime.tasks):
            if task.get_name() == "mqtt-bridge" and task.done():
                error = None if task.cancelled() else task.exception()
                restarts.append(f"{time.time():.1f}: {error!r:.200}")
                runtime.tasks[n] = asyncio.create_task(bridge.run(), name="mqtt-bridge")
        await asyncio.sleep(0.5)


def install_task_dump() -> None:
    """``kill -USR1 <pid>`` prints the stack of every asyncio task (to see what a run awaits)."""
    loop = asyncio.get_running_loop()

    def dump() -> None:
        for task in asyncio.all_tasks(loop):
            print(f"--- {task.get_name()}", file=sys.stderr)
            task.print_stack(file=sys.stderr)

    loop.add_signal_handler(signal.SIGUSR1, dump)


# --- the command ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--only", choices=["deposit", "ingest", "storm"], action="append")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", PG_DEFAULT))
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile the controller: the deposit loads, the single ingest replica, the storm",
    )
    parser.add_argument(
        "--one-replica",
        action="store_true",
        help="the deposit loads on one controller only (not again on two)",
    )
    args = parser.parse_args(argv)
    # aiomqtt warns about every publish queued behind others; the figures say it better.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    tune_gc()  # the deposit and storm controllers run in this process, as `lockerfleet serve`
    which = args.only or ["deposit", "ingest", "storm"]
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "quick": args.quick,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
    }
    if "deposit" in which:
        print("deposit round trip ...", flush=True)
        report["deposit"] = asyncio.run(bench_deposits(args.database_url, args.quick, args.profile))
        if not args.one_replica:
            print("deposit round trip, two replicas ...", flush=True)
            report["deposit_two_replicas"] = asyncio.run(
                bench_deposits(args.database_url, args.quick, False, replicas=2)
            )
    if "ingest" in which:
        print("event ingest ...", flush=True)
        report["ingest"] = asyncio.run(bench_ingest(args.database_url, args.quick, args.profile))
    if "storm" in which:
        print("reconnect storm ...", flush=True)
        s = asyncio.run(bench_storm(args.database_url, args.quick, args.profile))
        report["storm"] = s
        print(
            f"  {s['lockers']} lockers, {s.get('buffered_events')} buffered events, outage "
            f"{s['outage_s']} s: whole {s['whole_s_after_restart']} s after the restart "
            f"{s['milestones_s_after_restart']}",
            flush=True,
        )
    report["teardown_nudges"] = NUDGES
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"controller-{'quick-' if args.quick else ''}{report['started'][:19]}.json"
    path = RESULTS / name.replace(":", "")
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
