"""The simulator's files: fleets and fault plans, in TOML a person can write.

Fleet file (``--fleet``)::

    seed = 7                      # optional: lockers without keys get them derived from it

    [[locker]]
    locker_id = "XZ-0001"
    model = "LF-24C"              # a known model gives the layout when compartments is left out
    command_key = "64 hex digits" # 32 bytes; optional when seed is given
    code_key = "64 hex digits"
    username = "XZ-0001"          # optional: defaults to locker_id
    password = "secret"           # optional: derived from seed, else empty
    firmware = "1.4.2"            # optional
    battery_backup_s = 14400      # optional
    rssi_dbm = -80                # optional
    compartments = [              # optional for known models
      { id = "A01", size = "S", temperature = "ambient" },
      { id = "A02", size = "M", temperature = "chilled" },
    ]

Fault file (``--faults``)::

    seed = 1
    [[fault]]
    kind = "network_drop"         # see firmware_sim.faults for every kind
    at_s = 30                     # scripted time after the start ... or: per_hour = 0.5
    duration_s = 60
    lockers = ["XZ-0001"]         # optional: or count = 3 (picked at random); default all
    # optional per kind: compartment, sensor ("door"/"occupancy"), skew_s,
    # rise_deci_c_per_min, battery (true/false), corruption (0..1)

Every mistake is reported as one :class:`ValueError` line naming the file and the entry.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from firmware_sim.faults import Fault, FaultKind, FaultPlan, FaultRule
from firmware_sim.spec import (
    DEFAULT_FIRMWARE,
    CompartmentSpec,
    InvalidSpec,
    LockerSpec,
    code_key_for,
    command_key_for,
    model_layout,
    mqtt_password_for,
)
from protocol.messages import Sensor, SizeClass, TemperatureClass


def _read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from None


def _key(entry: dict[str, Any], name: str, derived: bytes | None, where: str) -> bytes:
    value = entry.get(name)
    if value is None:
        if derived is None:
            raise ValueError(f"{where}: {name} is missing (give it in hex, or a top-level seed)")
        return derived
    try:
        key = bytes.fromhex(str(value))
    except ValueError:
        raise ValueError(f"{where}: {name} is not hexadecimal") from None
    if len(key) < 16:
        raise ValueError(f"{where}: {name} must be at least 16 bytes (32 hex digits)")
    return key


def _compartments(entry: dict[str, Any], model: str, where: str) -> tuple[CompartmentSpec, ...]:
    raw = entry.get("compartments")
    if raw is None:
        return model_layout(model)
    if not isinstance(raw, list):
        raise ValueError(f"{where}: compartments must be a list of tables")
    out = []
    for item in raw:
        try:
            out.append(
                CompartmentSpec(
                    str(item["id"]),
                    SizeClass(item["size"]),
                    TemperatureClass(item.get("temperature", "ambient")),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: compartment {item!r}: {exc}") from None
    return tuple(out)


def locker_from_dict(entry: dict[str, Any], seed: int | None, where: str) -> LockerSpec:
    """Return the spec described by one ``[[locker]]`` table. Raises :class:`ValueError`."""
    locker_id = entry.get("locker_id")
    if not isinstance(locker_id, str):
        raise ValueError(f"{where}: locker_id (a string) is missing")
    where = f"{where} ({locker_id})"
    model = str(entry.get("model", "LF-24"))
    command_key = command_key_for(seed, locker_id) if seed is not None else None
    code_key = code_key_for(seed, locker_id) if seed is not None else None
    password = entry.get("password")
    if password is None:
        password = mqtt_password_for(seed, locker_id) if seed is not None else ""
    try:
        return LockerSpec(
            locker_id=locker_id,
            command_key=_key(entry, "command_key", command_key, where),
            code_key=_key(entry, "code_key", code_key, where),
            username=str(entry.get("username", locker_id)),
            password=str(password),
            compartments=_compartments(entry, model, where),
            firmware=str(entry.get("firmware", DEFAULT_FIRMWARE)),
            model=model,
            battery_backup_s=int(entry.get("battery_backup_s", 4 * 3600)),
            rssi_dbm=int(entry.get("rssi_dbm", -75)),
        )
    except InvalidSpec as exc:
        raise ValueError(f"{where}: {exc}") from None


def load_fleet(path: str | Path) -> list[LockerSpec]:
    """Return the lockers of a fleet file. Raises :class:`ValueError` (one line)."""
    data = _read_toml(path)
    seed = data.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise ValueError(f"{path}: seed must be an integer")
    entries = data.get("locker")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: no [[locker]] tables")
    specs = [locker_from_dict(e, seed, f"{path}: locker {i + 1}") for i, e in enumerate(entries)]
    ids = [s.locker_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: locker ids must be unique")
    return specs


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def dump_fleet(specs: Iterable[LockerSpec]) -> str:
    """Return a fleet file holding ``specs`` completely (keys in hex, every compartment)."""
    lines = ["# lockerfleet simulator fleet (see docs/simulator.md)", ""]
    for spec in specs:
        lines += [
            "[[locker]]",
            f"locker_id = {_toml_string(spec.locker_id)}",
            f"model = {_toml_string(spec.model)}",
            f"firmware = {_toml_string(spec.firmware)}",
            f'command_key = "{spec.command_key.hex()}"',
            f'code_key = "{spec.code_key.hex()}"',
            f"username = {_toml_string(spec.username)}",
            f"password = {_toml_string(spec.password)}",
            f"battery_backup_s = {spec.battery_backup_s}",
            f"rssi_dbm = {spec.rssi_dbm}",
            "compartments = [",
        ]
        for c in spec.compartments:
            size, temperature = c.size.value, c.temperature.value
            lines.append(f'  {{ id = "{c.id}", size = "{size}", temperature = "{temperature}" }},')
        lines += ["]", ""]
    return "\n".join(lines)


def _seconds(entry: dict[str, Any], name: str, where: str, default: float | None) -> int | None:
    value = entry.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{where}: {name} must be a non-negative number of seconds")
    return int(value * 1000)


def fault_rule_from_dict(entry: dict[str, Any], where: str) -> FaultRule:
    """Return the rule described by one ``[[fault]]`` table. Raises :class:`ValueError`."""
    try:
        kind = FaultKind(str(entry.get("kind")))
    except ValueError:
        known = ", ".join(k.value for k in FaultKind)
        raise ValueError(f"{where}: kind must be one of {known}") from None
    where = f"{where} ({kind})"
    lockers = entry.get("lockers")
    if lockers is not None and not (
        isinstance(lockers, list) and all(isinstance(x, str) for x in lockers)
    ):
        raise ValueError(f"{where}: lockers must be a list of locker ids")
    try:
        fault = Fault(
            kind=kind,
            duration_ms=_seconds(entry, "duration_s", where, 60) or 0,
            compartment=entry.get("compartment"),
            sensor=Sensor(entry.get("sensor", "door")),
            skew_ms=int(float(entry.get("skew_s", 600)) * 1000),
            rise_deci_c_per_min=int(entry.get("rise_deci_c_per_min", 30)),
            battery=bool(entry.get("battery", True)),
            corruption=float(entry.get("corruption", 0.05)),
        )
        return FaultRule(
            fault,
            at_ms=_seconds(entry, "at_s", where, None),
            per_hour=float(entry.get("per_hour", 0.0)),
            lockers=tuple(lockers) if lockers is not None else None,
            count=int(entry["count"]) if "count" in entry else None,
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def load_faults(path: str | Path) -> FaultPlan:
    """Return the fault plan in a fault file. Raises :class:`ValueError` (one line)."""
    data = _read_toml(path)
    seed = data.get("seed", 0)
    if not isinstance(seed, int):
        raise ValueError(f"{path}: seed must be an integer")
    entries = data.get("fault", [])
    if not isinstance(entries, list):
        raise ValueError(f"{path}: faults are [[fault]] tables")
    rules = tuple(fault_rule_from_dict(e, f"{path}: fault {i + 1}") for i, e in enumerate(entries))
    return FaultPlan(rules, seed)
