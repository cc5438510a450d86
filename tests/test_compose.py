"""docker-compose.yml, checked without Docker: valid against the Compose specification's JSON
schema, and true to our own rules (no anonymous MQTT, migrations before the controllers, two
replicas in one subscription group, health checks, no needless published ports, a required
secret).

The schema is test data, not committed: ``scripts/bootstrap`` extracts
``compose/config/compose_spec.json`` from the docker-compose 1.29.2 wheel into
``.venv/compose_spec.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft201909Validator  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / ".venv" / "compose_spec.json"
MOSQUITTO = ROOT / "deploy" / "mosquitto"
SECRET = "LOCKERFLEET_SECRET_KEY"
REQUIRED = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+):\?[^}]+\}$")
"""``${NAME:?message}``: Compose refuses to start when NAME is unset or empty."""


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def controllers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services that run ``lockerfleet serve``."""
    return {
        n: s for n, s in services.items() if s.get("command", [])[:2] == ["lockerfleet", "serve"]
    }


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    if not SCHEMA.exists():
        pytest.skip(f"{SCHEMA} is missing: run scripts/bootstrap (it extracts the schema)")
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    # The schema declares draft 2019-09 (with a trailing "#" jsonschema does not look up).
    Draft201909Validator.check_schema(schema)
    validator = Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in errors
    )


def test_the_stack_has_its_parts(services: dict[str, dict[str, Any]]) -> None:
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["mosquitto"]["image"] == "eclipse-mosquitto:2"
    assert services["migrate"]["command"] == ["lockerfleet", "db", "upgrade"]
    assert any(s.get("command", [])[:2] == ["locker-sim", "fleet"] for s in services.values())


def test_postgres_keeps_its_data_in_a_named_volume(compose: dict[str, Any]) -> None:
    mounts = compose["services"]["postgres"]["volumes"]
    named = [m.split(":")[0] for m in mounts if m.endswith(":/var/lib/postgresql/data")]
    assert named and named[0] in compose["volumes"]


def test_mosquitto_allows_no_anonymous_client() -> None:
    config = (MOSQUITTO / "mosquitto.conf").read_text(encoding="utf-8")
    settings = [line.split(None, 1) for line in config.splitlines() if line.strip()]
    settings = [s for s in settings if not s[0].startswith("#")]
    values = {s[0]: s[1].strip() if len(s) > 1 else "" for s in settings}
    assert values.get("allow_anonymous") == "false"
    assert values.get("password_file") and values.get("acl_file")
    assert "true" not in [v for k, v in settings if k == "allow_anonymous"]


def test_acl_confines_each_locker_to_its_own_topics() -> None:
    lines = [
        line.split()
        for line in (MOSQUITTO / "acl").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    patterns = [line for line in lines if line[0] == "pattern"]
    assert patterns
    for _, _access, topic in patterns:
        assert topic.startswith("lf/v1/locker/%u/"), topic
    users = [line[1] for line in lines if line[0] == "user"]
    assert "controller" in users
    # Before the first `user` line, only patterns (rules for every client) may appear.
    first_user = next(i for i, line in enumerate(lines) if line[0] == "user")
    assert all(line[0] == "pattern" for line in lines[:first_user])


def test_the_mosquitto_config_is_mounted(services: dict[str, dict[str, Any]]) -> None:
    mounts = services["mosquitto"]["volumes"]
    assert "./deploy/mosquitto/mosquitto.conf:/mosquitto/config/mosquitto.conf:ro" in mounts
    assert "./deploy/mosquitto/acl:/mosquitto/config/acl:ro" in mounts


def test_controllers_wait_for_the_migration(services: dict[str, dict[str, Any]]) -> None:
    found = controllers(services)
    assert found
    for name, service in found.items():
        depends = service["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_two_replicas_share_one_subscription_group(services: dict[str, dict[str, Any]]) -> None:
    found = controllers(services)
    assert len(found) == 2
    envs = [environment(s) for s in found.values()]
    instances = [e["LOCKERFLEET_INSTANCE_ID"] for e in envs]
    groups = {e["LOCKERFLEET_SHARE_GROUP"] for e in envs}
    assert len(set(instances)) == 2 and all(instances)
    assert len(groups) == 1 and all(groups)
    assert len({e["LOCKERFLEET_DATABASE_URL"] for e in envs}) == 1


def test_every_service_has_a_healthcheck_or_is_one_shot(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        one_shot = service.get("restart") == "no"
        check = service.get("healthcheck")
        assert one_shot or (check and check.get("test") and not check.get("disable")), name
        if one_shot:
            dependants = [s for s in services.values() if name in (s.get("depends_on") or {})]
            for dependant in dependants:
                condition = dependant["depends_on"][name]["condition"]
                assert condition == "service_completed_successfully", name


def test_health_checks_are_the_intended_ones(services: dict[str, dict[str, Any]]) -> None:
    def text(name: str) -> str:
        return " ".join(services[name]["healthcheck"]["test"])

    assert "pg_isready" in text("postgres")
    assert "mosquitto_sub" in text("mosquitto") or "mosquitto_pub" in text("mosquitto")
    for name in controllers(services):
        assert "urllib" in text(name) and "/readyz" in text(name)


def test_published_ports_bind_only_what_a_user_needs(
    services: dict[str, dict[str, Any]],
) -> None:
    assert "ports" not in services["postgres"]
    for name, service in services.items():
        for port in service.get("ports", []):
            text = str(port["published"] if isinstance(port, dict) else port)
            if name == "mosquitto":
                # The lockers connect from the field: the MQTT listener only.
                assert text.split(":")[-1] in ("1883", "8883"), port
                continue
            host = port.get("host_ip") if isinstance(port, dict) else text.split(":")[0]
            assert host == "127.0.0.1", f"{name} publishes {port} beyond loopback"


def test_the_secret_is_required_never_defaulted(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    for name in [*controllers(services), "migrate"]:
        value = environment(services[name])[SECRET]
        match = REQUIRED.match(value)
        assert match and match["name"] == SECRET, f"{name}: {SECRET}={value!r}"
    # No literal secret anywhere, and nothing hides a default (${VAR:-...}) for a password.
    raw = COMPOSE.read_text(encoding="utf-8")
    assert not re.search(r"\$\{[A-Z_]*(SECRET|PASSWORD)[A-Z_]*:?-", raw)
    for service in services.values():
        for key, value in environment(service).items():
            if "PASSWORD" in key or "SECRET" in key:
                assert REQUIRED.match(value), f"{key} must be a required variable"
