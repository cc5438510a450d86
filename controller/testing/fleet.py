"""Simulated lockers for controller tests, the demo and scenarios: locker specs built from the
credentials the controller issued at registration, so the simulator speaks with exactly the
keys a real locker would have received."""

from __future__ import annotations

from collections.abc import Iterable

from controller.services.lockers import CompartmentSpec as Layout
from controller.services.views import Credentials
from firmware_sim.spec import CompartmentSpec, LockerSpec


def locker_spec(credentials: Credentials, layout: Iterable[Layout], **extra: object) -> LockerSpec:
    """Return the simulator's spec of a registered locker with ``layout``."""
    return LockerSpec(
        locker_id=credentials.locker_id,
        command_key=bytes.fromhex(credentials.command_key_hex),
        code_key=bytes.fromhex(credentials.code_key_hex),
        username=credentials.mqtt_username,
        password=credentials.mqtt_password,
        compartments=tuple(CompartmentSpec(c.label, c.size, c.temperature) for c in layout),
        **extra,  # type: ignore[arg-type]
    )
