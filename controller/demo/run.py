"""``lockerfleet demo``: a county of simulated lockers, a controller and its API, on this machine.

It prints what it starts, ready-made tokens and requests to try, keeps simulated couriers,
agents and villagers busy, shows a status line, and stops cleanly on Ctrl-C (or SIGTERM, or
after ``--duration``), leaving no process behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections import Counter
from pathlib import Path

from sqlalchemy import func, select

from controller.db.models import Parcel
from controller.demo.county import plan_county
from controller.demo.stack import Stack, StackOptions
from controller.demo.traffic import Traffic
from controller.demo.villagers import VillagerSender

log = logging.getLogger("lockerfleet.demo")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo",
        help="run a simulated county: broker, controller, API and lockers on this machine",
        description="Start a county of simulated lockers (SQLite, a broker it starts itself, "
        "simulated couriers, agents and villagers) and the API. Ctrl-C stops everything.",
    )
    demo.add_argument("--lockers", type=int, default=50, help="simulated lockers (50)")
    demo.add_argument("--port", type=int, default=8000, help="HTTP port of the API (8000)")
    demo.add_argument("--host", default="127.0.0.1", help="HTTP address (127.0.0.1)")
    demo.add_argument("--broker", help="use this broker (mqtt://...) instead of starting one")
    demo.add_argument(
        "--broker-kind",
        choices=["mosquitto", "amqtt"],
        help="which broker to start (default: mosquitto if installed, else amqtt)",
    )
    demo.add_argument(
        "--data-dir",
        type=Path,
        default=Path("lockerfleet-demo"),
        help="where the demo keeps its SQLite database (./lockerfleet-demo)",
    )
    demo.add_argument("--seed", type=int, default=1, help="random seed of the county and traffic")
    demo.add_argument("--deposits-per-minute", type=float, default=30.0)
    demo.add_argument("--duration", type=float, help="stop after this many seconds")
    demo.add_argument("--quiet", action="store_true", help="do not print every SMS")
    demo.set_defaults(run_async=run_demo)


async def run_demo(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in (
        "lockerfleet.bridge",
        "lockerfleet.ingest",
        "lockerfleet.effects",
        "lockerfleet.parcels",
        "lockerfleet.lockers",
        "httpx",
        "uvicorn.access",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.lockers < 1:
        print("lockerfleet demo: --lockers must be at least 1", file=sys.stderr)
        return 2
    plan = plan_county(args.lockers, seed=args.seed, prefix="YY")
    stack = Stack(StackOptions(
        plan=plan, data_dir=args.data_dir, broker_url=args.broker, prefer_broker=args.broker_kind,
        host=args.host, port=args.port, seed=args.seed,
    ))  # fmt: skip
    villagers = VillagerSender(stack, seed=args.seed, echo=not args.quiet)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    traffic_task: asyncio.Task[None] | None = None
    try:
        print(f"starting: {len(plan.lockers)} simulated lockers in 沂源县 …", flush=True)
        await stack.start(sender=lambda _stack: villagers)
        if not await stack.wait_ready():
            print("lockerfleet demo: not every locker came online within 120 s", file=sys.stderr)
        _banner(stack)
        assert stack.county is not None
        traffic = Traffic(
            stack.base_url,
            stack.county,
            villagers,
            deposits_per_minute=args.deposits_per_minute,
            seed=args.seed,
        )
        traffic_task = asyncio.create_task(traffic.run())
        status = asyncio.create_task(_status(stack, villagers, traffic))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.duration)
        status.cancel()
        print("\nstopping …", flush=True)
    finally:
        if traffic_task is not None:
            traffic_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await traffic_task
        await villagers.close()
        await stack.stop()
    print("stopped; nothing left running", flush=True)
    return 0


def _banner(stack: Stack) -> None:
    assert stack.county is not None and stack.broker is not None
    county, base = stack.county, stack.base_url
    tokens = county.tokens
    agent = next(u for u in tokens if u.startswith("agent-"))
    locker = next(iter(county.lockers))
    lines = [
        "",
        f"lockerfleet demo — 沂源县: {len(county.lockers)} lockers, "
        f"{len(county.township_ids)} townships, {len(county.village_ids)} villages, "
        f"{len(county.carrier_ids)} carriers",
        f"  database  {stack.database_url}",
        f"  broker    {stack.broker.kind} at {stack.broker.address.url()}",
        f"  API       {base}   (OpenAPI: {base}/docs, ready: {base}/readyz)",
        "",
        "tokens (Authorization: Bearer ...):",
        *(f"  {name:<13} {token}" for name, token in tokens.items()),
        "",
        "try:",
        f"  export COURIER={tokens['courier-sf']} AGENT={tokens[agent]}",
        f"  export TECH={tokens['technician']}",
        f'  curl -s -H "Authorization: Bearer $COURIER" {base}/api/v1/lockers',
        f'  curl -s -H "Authorization: Bearer $COURIER" -H "Content-Type: application/json" '
        f'-d \'{{"tracking_number":"SF123456789","locker_id":"{locker}","size":"M",'
        f'"recipient_phone":"13800138000","consent_method":"sms_reply"}}\' {base}/api/v1/deposits',
        f'  curl -s -H "Authorization: Bearer $AGENT" {base}/api/v1/agent/occupancy',
        f'  curl -s -H "Authorization: Bearer $TECH" {base}/api/v1/lockers/{locker}',
        "",
        "simulated couriers, agents and villagers are at work; Ctrl-C stops everything.",
        "",
    ]
    print("\n".join(lines), flush=True)


async def _status(stack: Stack, villagers: VillagerSender, traffic: Traffic) -> None:
    while True:
        await asyncio.sleep(15)
        if stack.runtime is None:
            return
        async with stack.runtime.db.reader() as session:
            rows = (await session.execute(
                select(Parcel.state, func.count(Parcel.id)).group_by(Parcel.state)
            )).all()  # fmt: skip
        states = Counter({state: count for state, count in rows})
        online = await stack.lockers_online()
        summary = ", ".join(f"{k} {v}" for k, v in sorted(states.items())) or "no parcels yet"
        print(
            f"[status] lockers online {online}/{len(stack.options.plan.lockers)} | {summary} | "
            f"texts {villagers.counts['texts']} | deposits "
            f"{traffic.counts['deposit_201']}",
            flush=True,
        )
