"""What a simulated locker is: its identity, secrets and compartment layout, and whole fleets.

A :class:`LockerSpec` is the provisioning record of one locker (what a technician enters when
registering it): locker id, the two per-locker keys (command key for signatures, code key for
pickup-code hashes), MQTT credentials, the compartments with their size and temperature class,
firmware version and model.

:func:`generate_fleet` builds ``n`` specs from a seed, deterministically: the same seed always
gives the same ids, layouts and keys. Keys and passwords are derived from the seed and the locker
id with HMAC-SHA256 (:func:`command_key_for`, :func:`code_key_for`, :func:`mqtt_password_for`),
so an independent test publisher that knows the seed can sign commands without reading the
simulator's memory. Derived keys are for simulation only; real lockers get random keys.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.messages import SizeClass, TemperatureClass

DEFAULT_PREFIX = "SIM-"
DEFAULT_FIRMWARE = "1.4.2"
MAX_COMPARTMENTS = 100
"""Most compartments a simulated locker may have. A birth must fit in one 16 KiB payload and a
compartment takes up to about 145 bytes in it, so the protocol's own limit of 200 could not be
sent; 100 leaves room for the rest of the birth."""

_LOCKER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_COMPARTMENT_ID = re.compile(r"[A-Za-z0-9]{1,8}")
_FIRMWARE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?")
ROWS_PER_COLUMN = 8


class InvalidSpec(ValueError):
    """A locker or fleet description is not usable (says which field and why)."""


@dataclass(frozen=True, slots=True)
class CompartmentSpec:
    """One compartment as built: its label, size class and temperature class."""

    id: str
    size: SizeClass
    temperature: TemperatureClass = TemperatureClass.AMBIENT

    def __post_init__(self) -> None:
        if not _COMPARTMENT_ID.fullmatch(self.id):
            raise InvalidSpec(f"compartment id {self.id!r} must be 1-8 letters or digits")


@dataclass(frozen=True, slots=True)
class LockerSpec:
    """The provisioning record of one locker."""

    locker_id: str
    command_key: bytes
    code_key: bytes
    username: str
    password: str
    compartments: tuple[CompartmentSpec, ...]
    firmware: str = DEFAULT_FIRMWARE
    model: str = "LF-24"
    battery_backup_s: int = 4 * 3600
    """How long the backup battery carries the locker through a mains failure (0: none)."""
    rssi_dbm: int = -75
    """Typical signal strength of the locker's 4G uplink."""

    def __post_init__(self) -> None:
        if not _LOCKER_ID.fullmatch(self.locker_id):
            raise InvalidSpec(
                f"locker id {self.locker_id!r} must be 1-64 of A-Z a-z 0-9 _ -, "
                "starting with a letter or digit"
            )
        for name in ("command_key", "code_key"):
            if len(getattr(self, name)) < 16:
                raise InvalidSpec(f"{self.locker_id}: {name} must be at least 16 bytes")
        if not 1 <= len(self.compartments) <= MAX_COMPARTMENTS:
            raise InvalidSpec(
                f"{self.locker_id}: a locker has 1 to {MAX_COMPARTMENTS} compartments, "
                f"not {len(self.compartments)}"
            )
        labels = [c.id for c in self.compartments]
        if len(set(labels)) != len(labels):
            raise InvalidSpec(f"{self.locker_id}: compartment ids must be unique")
        if not _FIRMWARE.fullmatch(self.firmware):
            raise InvalidSpec(f"{self.locker_id}: firmware {self.firmware!r} is not x.y.z")
        if len(self.model) > 64:
            raise InvalidSpec(f"{self.locker_id}: model name longer than 64 characters")
        if self.battery_backup_s < 0:
            raise InvalidSpec(f"{self.locker_id}: battery_backup_s must not be negative")
        if not -150 <= self.rssi_dbm <= 0:
            raise InvalidSpec(f"{self.locker_id}: rssi_dbm must be between -150 and 0")

    def compartment(self, compartment_id: str) -> CompartmentSpec | None:
        """Return the compartment labelled ``compartment_id``, or ``None``."""
        for c in self.compartments:
            if c.id == compartment_id:
                return c
        return None


# ---------------------------------------------------------------------------------------------
# Models and their layouts
# ---------------------------------------------------------------------------------------------

Block = tuple[SizeClass, TemperatureClass, int]
"""``count`` compartments of one size and temperature class."""

_A, _C = TemperatureClass.AMBIENT, TemperatureClass.CHILLED
S, M, L, XL = SizeClass.S, SizeClass.M, SizeClass.L, SizeClass.XL

MODELS: dict[str, tuple[Block, ...]] = {
    "LF-12": ((S, _A, 4), (M, _A, 4), (L, _A, 3), (XL, _A, 1)),
    "LF-24": ((S, _A, 8), (M, _A, 8), (L, _A, 6), (XL, _A, 2)),
    "LF-24C": ((S, _A, 6), (M, _A, 8), (L, _A, 6), (M, _C, 4)),
    "LF-36": ((S, _A, 12), (M, _A, 12), (L, _A, 8), (XL, _A, 4)),
    "LF-48C": ((S, _A, 16), (M, _A, 14), (L, _A, 10), (XL, _A, 2), (M, _C, 4), (L, _C, 2)),
    "LF-60": ((S, _A, 20), (M, _A, 20), (L, _A, 14), (XL, _A, 6)),
}
"""Locker models the simulator knows, with their compartment layouts (chilled ones last)."""

_MODEL_WEIGHTS = {"LF-12": 30, "LF-24": 25, "LF-24C": 15, "LF-36": 15, "LF-48C": 10, "LF-60": 5}


def layout(blocks: Sequence[Block]) -> tuple[CompartmentSpec, ...]:
    """Return compartments for ``blocks``, labelled by column and row: A01..A08, B01, ..."""
    out: list[CompartmentSpec] = []
    for size, temperature, count in blocks:
        for _ in range(count):
            column, row = divmod(len(out), ROWS_PER_COLUMN)
            label = f"{chr(ord('A') + column % 26)}{column // 26 or ''}{row + 1:02d}"
            out.append(CompartmentSpec(label, size, temperature))
    return tuple(out)


@functools.cache
def model_layout(model: str) -> tuple[CompartmentSpec, ...]:
    """Return the compartments of a known model (one shared tuple per model).

    Raises :class:`InvalidSpec` for an unknown model.
    """
    blocks = MODELS.get(model)
    if blocks is None:
        raise InvalidSpec(f"unknown locker model {model!r}; known: {', '.join(MODELS)}")
    return layout(blocks)


# ---------------------------------------------------------------------------------------------
# Derived secrets and generated fleets
# ---------------------------------------------------------------------------------------------


def _derive(seed: int, locker_id: str, purpose: str) -> bytes:
    return hmac.new(
        f"lockerfleet-sim/{seed}".encode(), f"{purpose}\n{locker_id}".encode(), hashlib.sha256
    ).digest()


def command_key_for(seed: int, locker_id: str) -> bytes:
    """Return the 32-byte command key a generated locker gets from ``seed``."""
    return _derive(seed, locker_id, "command")


def code_key_for(seed: int, locker_id: str) -> bytes:
    """Return the 32-byte pickup-code key a generated locker gets from ``seed``."""
    return _derive(seed, locker_id, "code")


def mqtt_password_for(seed: int, locker_id: str) -> str:
    """Return the MQTT password a generated locker gets from ``seed`` (32 hex digits)."""
    return _derive(seed, locker_id, "mqtt").hex()[:32]


def locker_id_for(index: int, prefix: str = DEFAULT_PREFIX, width: int = 5) -> str:
    """Return the id of the ``index``-th generated locker (counting from 1): ``SIM-00001``."""
    return f"{prefix}{index:0{width}d}"


def generated_spec(
    locker_id: str, seed: int, *, model: str | None = None, rng: random.Random | None = None
) -> LockerSpec:
    """Return the spec of one locker generated from ``seed`` (model chosen by ``rng``)."""
    pick = rng or random.Random(f"{seed}/{locker_id}")
    if model is None:
        model = pick.choices(list(_MODEL_WEIGHTS), weights=list(_MODEL_WEIGHTS.values()))[0]
    return LockerSpec(
        locker_id=locker_id,
        command_key=command_key_for(seed, locker_id),
        code_key=code_key_for(seed, locker_id),
        username=locker_id,
        password=mqtt_password_for(seed, locker_id),
        compartments=model_layout(model),
        model=model,
        battery_backup_s=pick.choice((0, 2 * 3600, 4 * 3600, 8 * 3600)),
        rssi_dbm=pick.randint(-105, -55),
    )


def generate_fleet(n: int, seed: int, prefix: str = DEFAULT_PREFIX) -> list[LockerSpec]:
    """Return ``n`` locker specs derived from ``seed``; the same arguments give the same fleet.

    Ids are ``{prefix}{i:05d}`` for i = 1..n (wider when n needs it). Raises
    :class:`InvalidSpec` if ``n`` is negative or the prefix makes invalid ids.
    """
    if n < 0:
        raise InvalidSpec(f"a fleet cannot have {n} lockers")
    width = max(5, len(str(n)))
    rng = random.Random(seed)
    return [generated_spec(locker_id_for(i, prefix, width), seed, rng=rng) for i in range(1, n + 1)]
