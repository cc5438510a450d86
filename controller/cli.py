"""The ``lockerfleet`` command.

Every subcommand reads settings from ``LOCKERFLEET_*`` environment variables, with flags taking
precedence. Mistakes a user can make (a bad URL, a missing secret, a database that is not
migrated, a broker that refuses) end in one clear line on stderr and a non-zero exit status,
not a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import sqlalchemy.exc
from pydantic import ValidationError

from controller.db.engine import DatabaseUrlError, open_database
from controller.db.migrate import current_revision, head_revision, upgrade
from controller.domain.errors import DomainError
from controller.services.context import Role
from controller.settings import MissingSecret, Settings, load_settings

log = logging.getLogger("lockerfleet")

EPILOG = """\
settings come from LOCKERFLEET_* environment variables (LOCKERFLEET_DATABASE_URL,
LOCKERFLEET_MQTT_URL, LOCKERFLEET_SECRET_KEY, ...); flags override them.
Run `lockerfleet demo` for a county of simulated lockers on this machine.
"""


class UserError(Exception):
    """Something the user can fix; printed as one line."""


def _settings(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(
            database_url=getattr(args, "database_url", None),
            mqtt_url=getattr(args, "mqtt_url", None),
            topic_root=getattr(args, "topic_root", None),
            instance_id=getattr(args, "instance_id", None),
            http_host=getattr(args, "host", None),
            http_port=getattr(args, "port", None),
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: "
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise UserError(problems) from None


def _add_database(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="sqlite:///path.db or postgresql://user@host/db")


def _add_mqtt(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mqtt-url", help="mqtt://user:pass@host:port")
    parser.add_argument("--topic-root", help="topic root shared with the lockers (lf/v1)")


async def _db_upgrade(args: argparse.Namespace) -> None:
    settings = _settings(args)
    # No statement timeout: a migration may rightly run long on a big database.
    db = open_database(settings.database_url, timeouts=None)
    try:
        before = await current_revision(db)
        await upgrade(db, args.revision)
        after = await current_revision(db)
    finally:
        await db.dispose()
    print(f"database schema: {before or 'empty'} -> {after}")


async def _db_current(args: argparse.Namespace) -> None:
    settings = _settings(args)
    db = open_database(settings.database_url)
    try:
        current = await current_revision(db)
    finally:
        await db.dispose()
    head = head_revision()
    state = "up to date" if current == head else f"behind (newest is {head})"
    print(f"database schema: {current or 'empty'}, {state}")


async def _user_create(args: argparse.Namespace) -> None:
    from controller.runtime import build_runtime

    settings = _settings(args)
    runtime = build_runtime(settings)
    try:
        admin = runtime.services.admin
        user = await admin.create_user(
            None,
            name=args.name,
            role=Role(args.role),
            carrier_code=args.carrier,
            village_ids=args.village or [],
            phone=args.phone,
        )
        print(f"user {user.id} ({user.role}) created")
        if args.token:
            issued = await admin.issue_token(None, user_id=user.id, label=f"cli:{args.name}")
            print(f"token (shown once): {issued.token}")
    finally:
        await runtime.stop()


async def _token_issue(args: argparse.Namespace) -> None:
    from controller.runtime import build_runtime

    runtime = build_runtime(_settings(args))
    try:
        issued = await runtime.services.admin.issue_token(
            None, user_id=args.user_id, label=args.label
        )
        print(f"token (shown once): {issued.token}")
    finally:
        await runtime.stop()


async def _broker_config(args: argparse.Namespace) -> None:
    from pathlib import Path

    from controller.runtime import build_runtime
    from controller.services.broker_config import write_mosquitto
    from protocol.urls import parse_broker_url

    settings = _settings(args)
    broker = parse_broker_url(settings.mqtt_url)
    if not broker.username or not broker.password:
        raise UserError(
            "give the controller's broker user and password in the MQTT URL "
            "(--mqtt-url mqtt://controller:PASSWORD@host:1883 or LOCKERFLEET_MQTT_URL)"
        )
    runtime = build_runtime(settings)
    try:
        written = await write_mosquitto(
            runtime.ctx, Path(args.out), controller_user=broker.username,
            controller_password=broker.password, port=args.listen_port,
            config_dir=args.config_dir, run_as=args.run_as,
        )  # fmt: skip
    finally:
        await runtime.stop()
    print(
        f"wrote {', '.join(str(f) for f in written.files)} ({written.lockers} lockers); "
        "reload Mosquitto (SIGHUP) to apply"
    )


async def _fleet_file(args: argparse.Namespace) -> None:
    from controller.fleet_file import fleet_file
    from controller.runtime import build_runtime

    runtime = build_runtime(_settings(args))
    try:
        text, count = await fleet_file(runtime)
    finally:
        await runtime.stop()
    args.out.write_text(text, encoding="utf-8")
    args.out.chmod(0o600)
    print(f"{count} lockers written to {args.out} (it holds their keys: keep it private)")


def _bench(args: argparse.Namespace) -> int:
    from controller.bench import BenchError, provision_on_bench

    if not args.api.startswith(("http://", "https://")):
        raise UserError(f"--api must be the controller's URL (http(s)://host:port), not {args.api}")
    try:
        result = provision_on_bench(
            args.port, args.api, timeout=args.timeout, baudrate=args.baudrate
        )
    except BenchError as exc:
        raise UserError(str(exc)) from None
    if not result.confirmed:
        print(
            f"locker {result.locker_id} was given its credentials but did not come back on "
            f"{args.port}; power-cycle it and check it connects",
            file=sys.stderr,
        )
        return 1
    print(f"locker {result.locker_id} provisioned; it now runs with its own credentials")
    return 0


def _provisioning_identity(args: argparse.Namespace) -> None:
    from controller.keys import KeyRing
    from controller.services.broker_config import PROVISIONING_USER

    settings = _settings(args)
    password = KeyRing(settings.master_secret).provisioning_password()
    print(f"user {PROVISIONING_USER}\npassword {password}\ntopic root {settings.topic_root}")


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from controller.api.app import create_app

    settings = _settings(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level="info",
        proxy_headers=False,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lockerfleet",
        description="Controller for fleets of smart parcel lockers in townships and villages.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run one controller replica: HTTP API + MQTT bridge")
    _add_database(serve)
    _add_mqtt(serve)
    serve.add_argument("--host", help="HTTP listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8000)")
    serve.add_argument("--instance-id", help="this replica's name (default host-pid)")
    serve.set_defaults(run=_serve)

    db = sub.add_parser("db", help="database schema (Alembic migrations)")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = db_sub.add_parser("upgrade", help="create or upgrade the schema to the newest version")
    _add_database(up)
    up.add_argument("revision", nargs="?", default="head", help="target revision (head)")
    up.set_defaults(run_async=_db_upgrade)
    cur = db_sub.add_parser("current", help="show the schema version")
    _add_database(cur)
    cur.set_defaults(run_async=_db_current)

    user = sub.add_parser("user", help="users of the API")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    create = user_sub.add_parser("create", help="create a user (e.g. the first admin)")
    _add_database(create)
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--carrier", help="carrier code, for a courier")
    create.add_argument(
        "--village", type=int, action="append", help="village site id, for an agent (repeat)"
    )
    create.add_argument("--phone")
    create.add_argument("--token", action="store_true", help="also issue an API token")
    create.set_defaults(run_async=_user_create)

    token = sub.add_parser("token", help="API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    issue = token_sub.add_parser("issue", help="issue a token for a user (shown once)")
    _add_database(issue)
    issue.add_argument("--user-id", type=int, required=True)
    issue.add_argument("--label", default="cli")
    issue.set_defaults(run_async=_token_issue)

    broker = sub.add_parser("broker-config", help="broker access control from the database")
    broker_sub = broker.add_subparsers(dest="broker_kind", required=True, metavar="BROKER")
    mosquitto = broker_sub.add_parser(
        "mosquitto", help="write passwd, acl and mosquitto.conf (no anonymous access)"
    )
    _add_database(mosquitto)
    _add_mqtt(mosquitto)
    mosquitto.add_argument("--out", required=True, help="directory to write the files into")
    mosquitto.add_argument(
        "--listen-port", type=int, default=1883, help="the listener's port (1883)"
    )
    mosquitto.add_argument(
        "--config-dir", help="where the broker finds passwd and acl (default: --out)"
    )
    mosquitto.add_argument(
        "--run-as", help="system user Mosquitto runs as when started as root (it must own passwd)"
    )
    mosquitto.set_defaults(run_async=_broker_config)

    fleet = sub.add_parser(
        "fleet-file",
        help="write the registered lockers (with layouts and keys) as a simulator fleet file",
    )
    _add_database(fleet)
    fleet.add_argument("--out", type=Path, required=True, help="where to write the TOML file")
    fleet.set_defaults(run_async=_fleet_file)

    bench = sub.add_parser(
        "bench", help="provision the locker on a serial port (the technician's bench tool)"
    )
    bench.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyUSB0")
    bench.add_argument("--api", required=True, help="the controller's URL, e.g. https://host")
    bench.add_argument("--baudrate", type=int, default=115_200)
    bench.add_argument(
        "--timeout", type=float, default=20.0, help="seconds to wait for the locker (20)"
    )
    bench.set_defaults(run=_bench)

    identity = sub.add_parser(
        "provisioning-identity",
        help="print the broker user and password unprovisioned lockers ask for credentials with",
    )
    _add_mqtt(identity)
    identity.set_defaults(run=_provisioning_identity)

    from controller.demo.run import add_parser as add_demo
    from controller.scenarios.cli import add_parser as add_scenario

    add_demo(sub)
    add_scenario(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from controller.runtime import tune_gc

    tune_gc()
    try:
        if hasattr(args, "run_async"):
            runner: Callable[[argparse.Namespace], Coroutine[Any, Any, Any]] = args.run_async
            result = asyncio.run(runner(args))
        else:
            result = args.run(args)
    except KeyboardInterrupt:
        return 130
    except (UserError, DatabaseUrlError, DomainError, MissingSecret) as exc:
        print(f"lockerfleet: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"lockerfleet: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except sqlalchemy.exc.SQLAlchemyError as exc:
        hint = (
            " (has `lockerfleet db upgrade` been run?)"
            if "no such table" in str(exc) or ("does not exist" in str(exc))
            else ""
        )
        print(f"lockerfleet: database error: {str(exc).splitlines()[0]}{hint}", file=sys.stderr)
        return 2
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
