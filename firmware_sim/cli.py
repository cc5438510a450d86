"""``locker-sim``: run a simulated fleet on an MQTT broker, or one locker on a serial port.

::

    locker-sim fleet --broker mqtt://127.0.0.1:1883 --lockers 200 --seed 7 --duration 60 \\
                     --report report.json [--fleet FILE] [--faults FILE] [--processes K]
    locker-sim serial --port /dev/ttyUSB0 --locker-id SIM-00001 --seed 7
    locker-sim serial --port /dev/ttyUSB0 --locker-id XZ-0001 --token lfp_...   # unprovisioned
    locker-sim generate --lockers 20 --seed 7 > fleet.toml

On a terminal ``fleet`` keeps one status line up to date (connected lockers, messages per
second, reconnects, errors, faults). It stops after ``--duration`` or on Ctrl-C / SIGTERM and
writes the JSON report. Mistakes a user can make (a bad URL, a broker that is unreachable or
refuses, a missing or busy port, a broken file) end with one line on stderr and exit status 1;
wrong arguments with argparse's usage message and status 2.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from firmware_sim.faults import FaultPlan
from firmware_sim.files import dump_fleet, load_faults, load_fleet
from firmware_sim.fleet import FleetOptions
from firmware_sim.people import AttendantPolicy
from firmware_sim.probe import BrokerProblem, probe_broker
from firmware_sim.provisioning import (
    CredentialStore,
    ProvisioningFailed,
    Unprovisioned,
    load_fleet_with_tokens,
    provision_over_mqtt,
    provision_over_serial,
)
from firmware_sim.report import FleetReport
from firmware_sim.runner import Status, run_processes
from firmware_sim.serial_link import BytePort, SerialLocker, SerialPortError, open_port
from firmware_sim.settings import Settings
from firmware_sim.spec import (
    DEFAULT_PREFIX,
    LockerSpec,
    generate_fleet,
    generated_spec,
    model_layout,
)
from firmware_sim.store import JsonFileStore
from protocol.topics import DEFAULT_ROOT, TopicLayout
from protocol.urls import parse_broker_url


class UserError(Exception):
    """Something the user can fix; printed as one line."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="locker-sim", description="Simulated smart parcel lockers for lockerfleet."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    fleet = commands.add_parser("fleet", help="run a fleet of lockers on an MQTT broker")
    fleet.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt://host:port")
    fleet.add_argument("--lockers", type=int, help="how many lockers (default: 10, or the file)")
    fleet.add_argument("--seed", type=int, default=1, help="seed of ids, keys and behaviour")
    fleet.add_argument("--prefix", default=DEFAULT_PREFIX, help="locker id prefix (generated)")
    fleet.add_argument("--fleet", type=Path, help="fleet file (TOML) instead of generated ones")
    fleet.add_argument("--topic-root", default=DEFAULT_ROOT)
    fleet.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    fleet.add_argument("--report", type=Path, help="write the JSON report here")
    fleet.add_argument("--processes", type=int, default=1, help="worker processes")
    fleet.add_argument("--faults", type=Path, help="fault plan (TOML)")
    fleet.add_argument("--heartbeat", type=int, help="factory heartbeat in seconds (30)")
    fleet.add_argument("--connect-window", type=int, default=64, help="CONNECTs in flight")
    fleet.add_argument("--no-attendant", action="store_true", help="nobody completes opens")
    fleet.add_argument(
        "--time-scale", type=float, default=1.0, help="run the lockers' clock N times faster"
    )
    fleet.add_argument(
        "--provisioning-password",
        help="password of the _provisioning broker identity, for fleet-file lockers that have "
        "a provisioning_token instead of keys",
    )
    fleet.add_argument(
        "--credentials", type=Path, default=Path("credentials"),
        help="directory where provisioned lockers keep their credentials (./credentials)",
    )  # fmt: skip

    serial = commands.add_parser("serial", help="run one locker on a serial port")
    serial.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyUSB0")
    serial.add_argument("--locker-id", required=True)
    source = serial.add_mutually_exclusive_group()
    source.add_argument("--fleet", type=Path, help="take the locker from this fleet file")
    source.add_argument("--seed", type=int, default=1, help="derive keys from this seed")
    serial.add_argument("--state", type=Path, help="non-volatile memory file")
    serial.add_argument("--baudrate", type=int, default=115_200)
    serial.add_argument("--heartbeat", type=int, help="factory heartbeat in seconds (30)")
    serial.add_argument("--faults", type=Path, help="fault plan (TOML)")
    serial.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    serial.add_argument(
        "--token", help="an unprovisioned locker: its provisioning token (asks the bench tool)"
    )
    serial.add_argument("--model", default="LF-24", help="model of an unprovisioned locker")
    serial.add_argument(
        "--credentials", type=Path, help="where it keeps its credentials (ID.credentials.json)"
    )

    generate = commands.add_parser("generate", help="print a fleet file (TOML)")
    generate.add_argument("--lockers", type=int, default=10)
    generate.add_argument("--seed", type=int, default=1)
    generate.add_argument("--prefix", default=DEFAULT_PREFIX)
    return parser


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _settings(heartbeat: int | None) -> Settings:
    if heartbeat is None:
        return Settings()
    if heartbeat < 1:
        raise UserError("--heartbeat must be at least 1 second")
    return Settings(heartbeat_s=heartbeat)


def _faults(path: Path | None) -> FaultPlan | None:
    return load_faults(path) if path is not None else None


def _fleet_specs(args: argparse.Namespace) -> list[LockerSpec]:
    if args.lockers is not None and args.lockers < 1:
        raise UserError("--lockers must be at least 1")
    if args.fleet is not None:
        specs, waiting = load_fleet_with_tokens(args.fleet)
        if waiting:
            specs += _provision_fleet(args, waiting)
        return specs[: args.lockers] if args.lockers else specs
    return generate_fleet(args.lockers or 10, args.seed, args.prefix)


def _provision_fleet(args: argparse.Namespace, waiting: list[Unprovisioned]) -> list[LockerSpec]:
    """Provision the fleet file's lockers that have a token, over MQTT, one after another."""
    if not args.provisioning_password:
        raise UserError(
            f"{args.fleet} has lockers with a provisioning_token: give --provisioning-password "
            "(`lockerfleet provisioning-identity` prints it)"
        )
    try:
        broker = parse_broker_url(args.broker)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    specs = []
    for locker in waiting:
        store = CredentialStore(args.credentials / f"{locker.locker_id}.credentials.json")
        specs.append(
            provision_over_mqtt(
                locker, broker, args.provisioning_password, store=store,
                topic_root=args.topic_root,
            )
        )  # fmt: skip
        print(f"{locker.locker_id}: provisioned, credentials in {store.path}", file=sys.stderr)
    return specs


class StatusLine:
    """One line on a terminal, rewritten in place; nothing when not a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self._last: Status | None = None

    def __call__(self, status: Status) -> None:
        if not self.enabled:
            return
        last = self._last
        span = status.elapsed_s - last.elapsed_s if last else status.elapsed_s
        rate_out = (status.sent - (last.sent if last else 0)) / span if span > 0 else 0.0
        rate_in = (status.received - (last.received if last else 0)) / span if span > 0 else 0.0
        self._last = status
        sys.stderr.write(
            f"\r\x1b[K{status.connected}/{status.lockers} connected | "
            f"{rate_out:,.0f} msg/s out, {rate_in:,.0f} in | "
            f"reconnects {status.reconnects} | errors {status.errors} | "
            f"faults {status.faults} | {status.elapsed_s:,.0f} s"
        )
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self._last is not None:
            sys.stderr.write("\n")


def _summary(report: FleetReport) -> str:
    connect = (
        f"all connected after {report.all_connected_after_s:.1f} s"
        if report.all_connected_after_s is not None
        else f"{report.ever_connected} ever connected"
    )
    return (
        f"{report.lockers} lockers, {connect}, {report.connected} connected at the end; "
        f"{report.messages_sent} messages sent, {report.messages_received} received, "
        f"{report.reconnects} reconnects, {report.errors} errors"
    )


def run_fleet_command(args: argparse.Namespace) -> int:
    try:
        broker = parse_broker_url(args.broker)
        TopicLayout(args.topic_root)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.processes < 1:
        raise UserError("--processes must be at least 1")
    if args.time_scale <= 0:
        raise UserError("--time-scale must be positive")
    specs = _fleet_specs(args)
    options = FleetOptions(
        topic_root=args.topic_root,
        settings=_settings(args.heartbeat),
        connect_window=max(1, args.connect_window),
        attendant=None if args.no_attendant else AttendantPolicy(),
        seed=args.seed,
        time_scale=args.time_scale,
    )
    faults = _faults(args.faults)
    first = specs[0]
    probe_broker(
        broker, username=first.username, password=first.password, who=f"locker {first.locker_id}"
    )
    stop = _stop_on_signals()
    line = StatusLine()
    try:
        report = run_processes(
            specs,
            broker,
            options,
            processes=args.processes,
            faults=faults,
            duration_s=args.duration,
            stop=stop,
            on_status=line,
        )
    finally:
        line.done()
    if args.report is not None:
        try:
            args.report.write_text(report.to_json(), encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write the report {args.report}: {exc.strerror}") from None
    print(_summary(report))
    return 0


def _provision_serial(args: argparse.Namespace) -> tuple[LockerSpec, BytePort]:
    """Open the port and provision the locker on it (unless it kept its credentials)."""
    try:
        locker = Unprovisioned(
            args.locker_id, args.token, model_layout(args.model), model=args.model
        )
        store = CredentialStore(args.credentials or Path(f"{args.locker_id}.credentials.json"))
        store.load()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    port = open_port(args.port, args.baudrate)
    print(f"locker {args.locker_id} on {args.port}: waiting for the bench tool", file=sys.stderr)
    try:
        return provision_over_serial(locker, port.fileno(), store=store), port
    except BaseException:
        port.close()
        raise


def run_serial_command(args: argparse.Namespace) -> int:
    port: str | BytePort = args.port
    if args.token is not None:
        spec, port = _provision_serial(args)
    elif args.fleet is not None:
        found = [s for s in load_fleet(args.fleet) if s.locker_id == args.locker_id]
        if not found:
            raise UserError(f"{args.fleet} has no locker {args.locker_id}")
        spec = found[0]
    else:
        try:
            spec = generated_spec(args.locker_id, args.seed)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    store = JsonFileStore(args.state or Path(f"{spec.locker_id}.state.json"))
    try:
        store.load()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    locker = SerialLocker(
        spec,
        port,
        store,
        settings=_settings(args.heartbeat),
        baudrate=args.baudrate,
        attendant=AttendantPolicy(),
        faults=_faults(args.faults),
        seed=args.seed or 0,
    )
    stop = _stop_on_signals()
    began = time.monotonic()
    print(f"locker {spec.locker_id} on {args.port}; Ctrl-C to stop", file=sys.stderr)
    with locker:
        while not stop.is_set():
            if args.duration is not None and time.monotonic() - began >= args.duration:
                break
            stop.wait(0.5)
        counts = locker.run(lambda: dict(locker.counts))
    sent, received = counts.get("frames_out", 0), counts.get("frames_in", 0)
    print(f"{spec.locker_id}: {sent} frames sent, {received} received")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``locker-sim``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "fleet":
            return run_fleet_command(args)
        if args.command == "serial":
            return run_serial_command(args)
        if args.lockers < 0:
            raise UserError("--lockers must not be negative")
        sys.stdout.write(dump_fleet(generate_fleet(args.lockers, args.seed, args.prefix)))
        return 0
    except (
        UserError, ValueError, BrokerProblem, SerialPortError, ProvisioningFailed, RuntimeError,
    ) as exc:  # fmt: skip
        print(f"locker-sim: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
