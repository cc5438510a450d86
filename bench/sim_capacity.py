"""Simulator capacity: how many simulated lockers one process holds, against bare clients.

Run on demand (it takes several minutes)::

    .venv/bin/python bench/sim_capacity.py                      # 10,000 lockers, 3 repeats
    .venv/bin/python bench/sim_capacity.py --processes 4 --mp-lockers 19000

It starts a Mosquitto of its own on a free loopback port (``max_connections -1``; the broker
inherits this process's open-file limit, raised to the hard limit first: that limit, 20,000
here, is what caps the number of connections). Then, ``--repeats`` times and each in a fresh
child process, it measures:

* **bare**: N bare paho clients on the same epoll loop (:mod:`sim_bare`) that only connect,
  publish a retained presence and a telemetry-sized heartbeat every 30 s: the ceiling;
* **sim**: N simulated lockers (:class:`firmware_sim.fleet.MqttFleet`, generated fleet, factory
  settings: heartbeat every 30 s), with a controller stand-in in another process acknowledging
  births and events (:mod:`sim_acker`; ``--no-ack`` leaves them unacknowledged, so they are
  resent with backoff).

Both build their clients and then call ``gc.freeze()``, as the fleet runner
(:func:`firmware_sim.runner.run_fleet`) does, so that full collections do not walk objects that
live as long as the process. For each: the time from start until every client had its CONNACK
(counted on the client side), the CPU used to get there, the resident memory per client over
the process's base, and the CPU share of one core at steady state (after ``--settle`` seconds,
over ``--window`` seconds, sampled every 5 s: the median sample and the window's mean), plus the
broker's CPU over the same window, and the machine's 1-minute load average when the phase
started, when every client was connected and when the window ended. It prints medians over
the repeats and the ratios sim/bare, and writes everything to ``--out`` (JSON). With
``--processes K`` it then runs ``--mp-lockers`` lockers split over K child processes at once,
to see how far one machine goes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = "bench/v1"
SEED = 2024
SAMPLE_S = 5.0


def rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- one phase, in a child process ----------------------------------------------------------


def run_phase(args: argparse.Namespace) -> dict[str, Any]:
    from sim_bare import BareFleet

    from firmware_sim.fleet import FleetOptions, MqttFleet
    from firmware_sim.spec import generate_fleet
    from protocol.urls import BrokerAddress

    loads = [os.getloadavg()[0]]  # the machine's 1-minute load: at start, connected, end
    base_rss = rss_kb()
    cpu_start = time.process_time()
    built = time.monotonic()
    fleet: Any
    if args.phase == "bare":
        fleet = BareFleet(
            args.lockers,
            "127.0.0.1",
            args.port,
            prefix=args.prefix,
            root=ROOT,
            connect_window=args.connect_window,
        )
    else:
        specs = generate_fleet(args.lockers, SEED, prefix=args.prefix)
        options = FleetOptions(topic_root=ROOT, connect_window=args.connect_window, seed=SEED)
        fleet = MqttFleet(specs, BrokerAddress("127.0.0.1", args.port), options)
    gc.freeze()  # as the fleet runner does: the clients live as long as the process
    build_s = time.monotonic() - built
    cpu_built = time.process_time()
    fleet.start()
    deadline = time.monotonic() + args.connect_timeout
    while fleet.all_connected_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
    connected_at = fleet.all_connected_at
    cpu_connected = time.process_time()
    rss_connected = rss_kb()
    loads.append(os.getloadavg()[0])
    time.sleep(args.settle)
    samples: list[float] = []
    broker_before = cpu_seconds(args.broker_pid)
    window_start, cpu_window_start = time.monotonic(), time.process_time()
    while time.monotonic() - window_start < args.window:
        t0, c0 = time.monotonic(), time.process_time()
        time.sleep(SAMPLE_S)
        samples.append((time.process_time() - c0) / (time.monotonic() - t0))
    elapsed = time.monotonic() - window_start
    loads.append(os.getloadavg()[0])
    window_cpu = (time.process_time() - cpu_window_start) / elapsed
    broker_cpu = (cpu_seconds(args.broker_pid) - broker_before) / elapsed
    if args.phase == "bare":
        connacks, errors = fleet.connacks, fleet.errors
    else:
        stats = fleet.stats()
        connacks, errors = stats.connacks, stats.errors
    result = {
        "phase": args.phase,
        "clients": args.lockers,
        "build_s": round(build_s, 3),
        "cpu_build_s": round(cpu_built - cpu_start, 3),
        "all_connected_s": (
            None if connected_at is None else round(connected_at - fleet.started_at, 3)
        ),
        "cpu_connect_s": round(cpu_connected - cpu_built, 3),
        "rss_base_kb": base_rss,
        "rss_connected_kb": rss_connected,
        "rss_end_kb": rss_kb(),
        "rss_per_client_kb": round((rss_kb() - base_rss) / args.lockers, 2),
        "cpu_core_median": round(statistics.median(samples), 4),
        "cpu_core_mean": round(window_cpu, 4),
        "broker_cpu_core": round(broker_cpu, 4),
        "connacks": connacks,
        "errors": errors,
        "load_1min": [round(x, 2) for x in loads],
    }
    fleet.stop()
    return result


# --- the orchestration ----------------------------------------------------------------------


CHILDREN: list[subprocess.Popen[Any]] = []
"""Every child process started, so that an interrupted run leaves nothing behind."""


def spawn_phase(
    kind: str, lockers: int, prefix: str, port: int, broker_pid: int, args: argparse.Namespace
) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--phase",
        kind,
        "--lockers",
        str(lockers),
        "--prefix",
        prefix,
        "--port",
        str(port),
        "--broker-pid",
        str(broker_pid),
        "--window",
        str(args.window),
        "--settle",
        str(args.settle),
        "--connect-window",
        str(args.connect_window),
        "--connect-timeout",
        str(args.connect_timeout),
    ]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    CHILDREN.append(child)
    return child


def collect(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"a benchmark phase failed with status {process.returncode}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def start_acker(port: int) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "sim_acker.py"),
            "--port",
            str(port),
            "--root",
            ROOT,
            "--seed",
            str(SEED),
        ]
    )
    CHILDREN.append(child)
    return child


def stop(process: subprocess.Popen[Any]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 4) if values else None


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = (
        "all_connected_s",
        "cpu_connect_s",
        "rss_per_client_kb",
        "cpu_core_median",
        "cpu_core_mean",
        "broker_cpu_core",
        "build_s",
    )
    summary = {k: median_of(runs, k) for k in keys}
    summary["connacks"] = min(r["connacks"] for r in runs)
    summary["errors"] = max(r["errors"] for r in runs)
    loads = [x for r in runs for x in r.get("load_1min", ())]
    summary["load_1min_range"] = [min(loads), max(loads)] if loads else None
    return summary


def ratio(sim: float | None, bare: float | None) -> float | None:
    return round(sim / bare, 2) if sim is not None and bare else None


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    from controller.embedded_broker import MosquittoProcess

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    report: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "bench/sim_capacity.py", *sys.argv[1:]]),
        "lockers": args.lockers,
        "repeats": args.repeats,
        "window_s": args.window,
        "acknowledged": not args.no_ack,
        "open_file_limit": hard,
        "cpus": os.cpu_count(),
        "runs": {"bare": [], "sim": []},
    }
    broker = MosquittoProcess(extra_config="max_connections -1\n")
    broker.start()
    assert broker.process is not None
    pid = broker.process.pid
    try:
        for r in range(args.repeats):
            for kind in ("bare", "sim"):
                acker = start_acker(broker.port) if kind == "sim" and not args.no_ack else None
                try:
                    phase = spawn_phase(
                        kind, args.lockers, f"R{r}{kind[0].upper()}-", broker.port, pid, args
                    )
                    result = collect(phase)
                finally:
                    if acker is not None:
                        stop(acker)
                report["runs"][kind].append(result)
                print(f"repeat {r + 1} {kind}: {json.dumps(result)}", file=sys.stderr)
                broker.stop()  # a fresh broker for every phase: no sessions left over
                broker.start()
                assert broker.process is not None
                pid = broker.process.pid
        bare, sim = summarise(report["runs"]["bare"]), summarise(report["runs"]["sim"])
        report["bare"], report["sim"] = bare, sim
        report["ratios_sim_over_bare"] = {
            k: ratio(sim[k], bare[k])
            for k in (
                "all_connected_s",
                "cpu_connect_s",
                "rss_per_client_kb",
                "cpu_core_median",
                "cpu_core_mean",
            )
        }
        if args.processes:
            acker = None if args.no_ack else start_acker(broker.port)
            share = args.mp_lockers // args.processes
            try:
                phases = [
                    spawn_phase("sim", share, f"P{k}-", broker.port, pid, args)
                    for k in range(args.processes)
                ]
                parts = [collect(p) for p in phases]
            finally:
                if acker is not None:
                    stop(acker)
            connected = [p["all_connected_s"] for p in parts]
            report["processes"] = {
                "processes": args.processes,
                "lockers": share * args.processes,
                "connacks": sum(p["connacks"] for p in parts),
                "errors": sum(p["errors"] for p in parts),
                "all_connected_s": None if None in connected else max(connected),
                "cpu_core_total": round(sum(p["cpu_core_mean"] for p in parts), 4),
                "rss_total_mb": round(sum(p["rss_end_kb"] for p in parts) / 1024, 1),
                "broker_cpu_core": max(p["broker_cpu_core"] for p in parts),
                "broker_rss_mb": round(rss_kb(pid) / 1024, 1),
                "load_1min": [x for p in parts for x in p["load_1min"]],
                "parts": parts,
            }
    finally:
        for child in CHILDREN:
            if child.poll() is None:
                stop(child)
        broker.close()
    return report


def print_summary(report: dict[str, Any]) -> None:
    bare, sim, ratios = report["bare"], report["sim"], report["ratios_sim_over_bare"]
    print(f"{report['lockers']} clients in one process, medians of {report['repeats']} runs")
    print(f"{'':28}{'bare':>12}{'simulated':>12}{'sim/bare':>10}")
    rows = [
        ("all connected after (s)", "all_connected_s"),
        ("CPU to connect (s)", "cpu_connect_s"),
        ("RSS per client (KB)", "rss_per_client_kb"),
        ("CPU at steady state (core)", "cpu_core_median"),
        ("  mean over the window", "cpu_core_mean"),
    ]
    for label, key in rows:
        print(f"{label:28}{bare[key]!s:>12}{sim[key]!s:>12}{ratios.get(key)!s:>10}")
    print(f"{'broker CPU (core)':28}{bare['broker_cpu_core']!s:>12}{sim['broker_cpu_core']!s:>12}")
    loads = [f"{r['load_1min_range'][0]}-{r['load_1min_range'][1]}" for r in (bare, sim)]
    print(f"{'1-minute load (min-max)':28}{loads[0]:>12}{loads[1]:>12}")
    if "processes" in report:
        mp = report["processes"]
        print(
            f"{mp['lockers']} lockers over {mp['processes']} processes: {mp['connacks']} CONNACKs, "
            f"all connected after {mp['all_connected_s']} s, {mp['cpu_core_total']} core in "
            f"total, {mp['rss_total_mb']} MB, broker {mp['broker_cpu_core']} core and "
            f"{mp['broker_rss_mb']} MB, {mp['errors']} errors, 1-minute load "
            f"{min(mp['load_1min'])}-{max(mp['load_1min'])}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lockers", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window", type=float, default=60.0, help="steady-state seconds")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after connecting")
    parser.add_argument("--connect-window", type=int, default=64)
    parser.add_argument("--connect-timeout", type=float, default=120.0)
    parser.add_argument("--processes", type=int, default=0)
    parser.add_argument("--mp-lockers", type=int, default=19_000)
    parser.add_argument("--no-ack", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "sim_capacity.json")
    parser.add_argument("--phase", choices=("bare", "sim"), help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="B-", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--broker-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args)))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up on SIGTERM too
    report = orchestrate(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_summary(report)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
