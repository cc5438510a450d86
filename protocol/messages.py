"""Every message of protocol v1, defined once.

Each message is a frozen dataclass; its annotations are the one definition of its fields, from
which the codec parses and the JSON Schemas in ``docs/asyncapi.json`` are generated. Instances
validate themselves when constructed, so a message that exists is a valid message.

Device messages (locker → controller) share an envelope: ``locker_id``, ``boot_id`` (strictly
increasing per power-up, kept in non-volatile memory) and ``seq``. Births, events and command
results take the next number of the boot's sequence and are kept by the locker until the
controller acknowledges them; telemetry and presence repeat the last number taken (a high-water
mark that lets the receiver spot a gap without waiting for the next event).

All times are integer milliseconds since the Unix epoch (UTC); temperatures are integer tenths
of a degree Celsius; there are no floating-point numbers anywhere on the wire.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Annotated, ClassVar

from protocol.fields import (
    MAX_SAFE_INT,
    Discriminated,
    Doc,
    MaxLength,
    Pattern,
    Range,
    validate,
)

PROTOCOL_VERSION = 1
"""The ``v`` field of every message. A receiver rejects any other major version."""

# ---------------------------------------------------------------------------------------------
# Field types shared by several messages
# ---------------------------------------------------------------------------------------------

LockerId = Annotated[
    str,
    Pattern(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"),
    Doc("Locker identifier: 1-64 of A-Z a-z 0-9 _ -, starting with a letter or digit."),
]
CompartmentId = Annotated[
    str, Pattern(r"[A-Za-z0-9]{1,8}"), Doc("Compartment label on the locker, e.g. A01.")
]
BootId = Annotated[
    int,
    Range(1, 2**32 - 1),
    Doc("Power-up counter kept in non-volatile memory; strictly increases with every boot."),
]
Seq = Annotated[int, Range(0, MAX_SAFE_INT), Doc("Per-boot sequence number, starting at 1.")]
Millis = Annotated[int, Range(0, MAX_SAFE_INT), Doc("Milliseconds since 1970-01-01T00:00:00Z.")]
DurationMs = Annotated[int, Range(0, MAX_SAFE_INT), Doc("A duration in milliseconds.")]
DeciCelsius = Annotated[int, Range(-500, 1000), Doc("Temperature in tenths of a degree Celsius.")]
Percent = Annotated[int, Range(0, 100)]
CommandId = Annotated[
    str, Pattern(r"[A-Za-z0-9_-]{8,64}"), Doc("Unique id of a command, chosen by the controller.")
]
CodeHash = Annotated[
    str,
    Pattern(r"[0-9a-f]{64}"),
    Doc("Keyed hash of a pickup code, lowercase hex (see 'Pickup codes')."),
]
Signature = Annotated[str, Pattern(r"[0-9a-f]{64}"), Doc("HMAC-SHA256, lowercase hex.")]
ParcelRef = Annotated[
    str, Pattern(r"[A-Za-z0-9_-]{1,40}"), Doc("Opaque parcel reference chosen by the controller.")
]
ShortText = Annotated[str, MaxLength(200)]
Version = Annotated[int, Range(0, MAX_SAFE_INT)]


class SizeClass(enum.StrEnum):
    """Compartment size classes (height x 38 x 64 cm): S 8, M 19, L 41, XL 60."""

    S = "S"
    M = "M"
    L = "L"
    XL = "XL"

    @property
    def rank(self) -> int:
        return _SIZE_RANK[self]


_SIZE_RANK = {SizeClass.S: 0, SizeClass.M: 1, SizeClass.L: 2, SizeClass.XL: 3}


class TemperatureClass(enum.StrEnum):
    AMBIENT = "ambient"
    CHILLED = "chilled"  # held at 4 ± 2 °C


class DoorState(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class LockState(enum.StrEnum):
    LOCKED = "locked"
    RELEASED = "released"


class PresenceState(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class PowerSource(enum.StrEnum):
    MAINS = "mains"
    BATTERY = "battery"


# ---------------------------------------------------------------------------------------------
# Presence and birth
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Presence:
    """Whether a locker is connected. Retained; the offline form is the MQTT last will."""

    TYPE: ClassVar[str] = "presence"
    locker_id: LockerId
    boot_id: BootId
    seq: Seq
    connection: Annotated[int, Range(1, MAX_SAFE_INT), Doc("Connection counter of this boot.")]
    state: PresenceState
    ts: Millis

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class CompartmentState:
    """One compartment as the locker sees it."""

    id: CompartmentId
    size: SizeClass
    temperature: TemperatureClass
    door: DoorState
    lock: LockState
    occupied: bool
    in_service: bool
    deci_celsius: DeciCelsius | None = None

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class CodeStaging:
    """A full code-cache sync the locker has partly received (see 'Pickup-code cache')."""

    version: Version
    pages: Annotated[int, Range(1, 10_000)]
    have: Annotated[tuple[Annotated[int, Range(1, 10_000)], ...], MaxLength(10_000)]

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class Birth:
    """Full state, sent on every connect and on request; takes a sequence number."""

    TYPE: ClassVar[str] = "birth"
    locker_id: LockerId
    boot_id: BootId
    seq: Seq
    ts: Millis
    firmware: Annotated[str, Pattern(r"[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?")]
    model: Annotated[str, MaxLength(64)]
    connection: Annotated[int, Range(1, MAX_SAFE_INT)]
    code_cache_version: Version
    config_version: Version
    pending_events: Annotated[int, Range(0, MAX_SAFE_INT)]
    compartments: Annotated[tuple[CompartmentState, ...], MaxLength(200)]
    code_staging: CodeStaging | None = None

    def __post_init__(self) -> None:
        validate(self)
        labels = [c.id for c in self.compartments]
        if len(set(labels)) != len(labels):
            raise ValueError("compartments: labels must be unique")


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


class EventKind(enum.StrEnum):
    DOOR_OPENED = "door_opened"
    DOOR_CLOSED = "door_closed"
    DOOR_JAMMED = "door_jammed"
    DOOR_FORCED = "door_forced"
    DOOR_LEFT_OPEN = "door_left_open"
    OCCUPANCY_CHANGED = "occupancy_changed"
    SENSOR_FAULT = "sensor_fault"
    SENSOR_RECOVERED = "sensor_recovered"
    PICKUP = "pickup"
    CODE_REJECTED = "code_rejected"
    TEMPERATURE_EXCURSION = "temperature_excursion"
    TEMPERATURE_RESTORED = "temperature_restored"
    POWER_CHANGED = "power_changed"
    TAMPER = "tamper"
    EVENTS_DROPPED = "events_dropped"
    CONFIG_APPLIED = "config_applied"


class DoorCause(enum.StrEnum):
    COMMAND = "command"  # a signed open_compartment command released the lock
    KEYPAD = "keypad"  # a pickup code typed on the keypad released the lock
    SERVICE = "service"  # the technician's mechanical service key


class Sensor(enum.StrEnum):
    DOOR = "door"
    OCCUPANCY = "occupancy"
    TEMPERATURE = "temperature"
    LOCK = "lock"


@dataclass(frozen=True, slots=True)
class DoorOpened:
    """The door sensor reports open after the lock was released for ``cause``."""

    compartment: CompartmentId
    cause: DoorCause
    command_id: CommandId | None = None
    code_hash: CodeHash | None = None

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class DoorClosed:
    """The door sensor reports closed; the lock re-engaged; occupancy as sensed now."""

    compartment: CompartmentId
    occupied: bool
    open_for_ms: DurationMs

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class DoorJammed:
    """The lock was released but the door never opened: a jam, never reported as an opening.

    The locker takes the compartment out of service until a technician clears it.
    """

    compartment: CompartmentId
    command_id: CommandId | None = None

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class DoorForced:
    """The door opened while its lock was engaged: no command or code is behind it."""

    compartment: CompartmentId

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class DoorLeftOpen:
    """The door has stayed open longer than the configured limit (repeated while it stays)."""

    compartment: CompartmentId
    open_for_ms: DurationMs

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class OccupancyChanged:
    """The occupancy sensor changed while the door was closed."""

    compartment: CompartmentId
    occupied: bool

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class SensorFault:
    """A sensor gives implausible readings (stuck, out of range, disagreeing)."""

    compartment: CompartmentId
    sensor: Sensor
    detail: ShortText = ""

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class SensorRecovered:
    """A sensor that was reported faulty reads plausibly again."""

    compartment: CompartmentId
    sensor: Sensor

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class Pickup:
    """A pickup code typed on the keypad matched the code cache; the door is being released.

    ``offline`` is true when the locker had no connection to the controller at the time.
    """

    compartment: CompartmentId
    code_hash: CodeHash
    parcel_ref: ParcelRef
    offline: bool

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class CodeRejected:
    """A code typed on the keypad matched nothing. The code itself is never sent."""

    attempts: Annotated[int, Range(1, 1_000_000), Doc("Consecutive wrong codes so far.")]
    locked_out_ms: DurationMs = 0

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class TemperatureExcursion:
    """A chilled compartment's temperature left its allowed range."""

    compartment: CompartmentId
    deci_celsius: DeciCelsius
    min_deci_celsius: DeciCelsius
    max_deci_celsius: DeciCelsius

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class TemperatureRestored:
    """A chilled compartment's temperature is back within range."""

    compartment: CompartmentId
    deci_celsius: DeciCelsius

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class PowerChanged:
    """The locker switched between mains and battery, or the battery crossed 20 % or 10 %."""

    source: PowerSource
    battery_pct: Percent

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class Tamper:
    """The enclosure's tamper switch or tilt sensor tripped."""

    detail: ShortText = ""

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class EventsDropped:
    """The event buffer overflowed: ``count`` events (``first_seq``..``last_seq``) were lost."""

    count: Annotated[int, Range(1, MAX_SAFE_INT)]
    first_seq: Seq
    last_seq: Seq

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class ConfigApplied:
    """The locker applied configuration ``config_version`` (after a set_config command)."""

    config_version: Version

    def __post_init__(self) -> None:
        validate(self)


EventData = (
    DoorOpened
    | DoorClosed
    | DoorJammed
    | DoorForced
    | DoorLeftOpen
    | OccupancyChanged
    | SensorFault
    | SensorRecovered
    | Pickup
    | CodeRejected
    | TemperatureExcursion
    | TemperatureRestored
    | PowerChanged
    | Tamper
    | EventsDropped
    | ConfigApplied
)

EVENT_DATA: dict[str, type[EventData]] = {
    EventKind.DOOR_OPENED: DoorOpened,
    EventKind.DOOR_CLOSED: DoorClosed,
    EventKind.DOOR_JAMMED: DoorJammed,
    EventKind.DOOR_FORCED: DoorForced,
    EventKind.DOOR_LEFT_OPEN: DoorLeftOpen,
    EventKind.OCCUPANCY_CHANGED: OccupancyChanged,
    EventKind.SENSOR_FAULT: SensorFault,
    EventKind.SENSOR_RECOVERED: SensorRecovered,
    EventKind.PICKUP: Pickup,
    EventKind.CODE_REJECTED: CodeRejected,
    EventKind.TEMPERATURE_EXCURSION: TemperatureExcursion,
    EventKind.TEMPERATURE_RESTORED: TemperatureRestored,
    EventKind.POWER_CHANGED: PowerChanged,
    EventKind.TAMPER: Tamper,
    EventKind.EVENTS_DROPPED: EventsDropped,
    EventKind.CONFIG_APPLIED: ConfigApplied,
}
"""The body dataclass of each event kind: the one table that defines the events."""

EVENT_KIND_OF: dict[type[EventData], EventKind] = {
    cls: EventKind(kind) for kind, cls in EVENT_DATA.items()
}


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened at the locker; takes a sequence number and is kept until acked."""

    TYPE: ClassVar[str] = "event"
    locker_id: LockerId
    boot_id: BootId
    seq: Seq
    ts: Millis
    event: EventKind
    data: Annotated[EventData, Discriminated("event", EVENT_DATA)]

    def __post_init__(self) -> None:
        validate(self)
        if not isinstance(self.data, EVENT_DATA[self.event]):
            raise ValueError(f"data: {type(self.data).__name__} is not the body of {self.event}")

    @classmethod
    def of(cls, locker_id: str, boot_id: int, seq: int, ts: int, data: EventData) -> Event:
        """Return the event carrying ``data``, its kind taken from the body's type."""
        return cls(locker_id, boot_id, seq, ts, EVENT_KIND_OF[type(data)], data)


# ---------------------------------------------------------------------------------------------
# Telemetry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TemperatureReading:
    compartment: CompartmentId
    deci_celsius: DeciCelsius

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class Telemetry:
    """Periodic health report; doubles as the heartbeat. QoS 0, not acknowledged."""

    TYPE: ClassVar[str] = "telemetry"
    locker_id: LockerId
    boot_id: BootId
    seq: Seq
    ts: Millis
    uptime_s: Annotated[int, Range(0, MAX_SAFE_INT)]
    power: PowerSource
    battery_pct: Percent
    rssi_dbm: Annotated[int, Range(-150, 0), Doc("Received signal strength of the uplink.")]
    doors_open: Annotated[int, Range(0, 200)]
    pending_events: Annotated[int, Range(0, MAX_SAFE_INT)]
    events_dropped_total: Annotated[int, Range(0, MAX_SAFE_INT)]
    temperatures: Annotated[tuple[TemperatureReading, ...], MaxLength(200)] = ()

    def __post_init__(self) -> None:
        validate(self)


# ---------------------------------------------------------------------------------------------
# Commands (controller → locker)
# ---------------------------------------------------------------------------------------------


class Action(enum.StrEnum):
    OPEN_COMPARTMENT = "open_compartment"
    SYNC_CODES = "sync_codes"
    SET_CONFIG = "set_config"
    REQUEST_REBIRTH = "request_rebirth"
    REBOOT = "reboot"


class OpenPurpose(enum.StrEnum):
    DEPOSIT = "deposit"
    PICKUP = "pickup"
    AGENT_PICKUP = "agent_pickup"
    RETURN_TO_CARRIER = "return_to_carrier"
    DROPOFF = "dropoff"
    COLLECTION = "collection"
    SERVICE = "service"


class SyncMode(enum.StrEnum):
    FULL = "full"
    DELTA = "delta"


@dataclass(frozen=True, slots=True)
class OpenCompartment:
    """Release the lock of exactly one compartment."""

    compartment: CompartmentId
    purpose: OpenPurpose
    parcel_ref: ParcelRef | None = None
    screen_text: Annotated[str, MaxLength(32)] | None = None

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class CodeEntry:
    """One pickup code in the locker's cache, as a keyed hash."""

    hash: CodeHash
    compartment: CompartmentId
    parcel_ref: ParcelRef
    expires_at: Millis

    def __post_init__(self) -> None:
        validate(self)


MAX_CODES_PER_PAGE = 100


@dataclass(frozen=True, slots=True)
class SyncCodes:
    """Replace (full, in pages) or patch (delta) the locker's pickup-code cache."""

    mode: SyncMode
    to_version: Annotated[int, Range(1, MAX_SAFE_INT)]
    from_version: Version | None = None
    page: Annotated[int, Range(1, 10_000)] = 1
    pages: Annotated[int, Range(1, 10_000)] = 1
    add: Annotated[tuple[CodeEntry, ...], MaxLength(MAX_CODES_PER_PAGE)] = ()
    remove: Annotated[tuple[CodeHash, ...], MaxLength(MAX_CODES_PER_PAGE)] = ()

    def __post_init__(self) -> None:
        validate(self)
        if self.page > self.pages:
            raise ValueError("page: must not exceed pages")
        if self.mode is SyncMode.DELTA:
            if self.from_version is None:
                raise ValueError("from_version: required for a delta sync")
            if self.pages != 1:
                raise ValueError("pages: a delta sync is a single page")
            if self.to_version <= self.from_version:
                raise ValueError("to_version: must be greater than from_version")
        elif self.remove:
            raise ValueError("remove: a full sync replaces the cache and removes nothing")


@dataclass(frozen=True, slots=True)
class SetConfig:
    """The locker's complete desired configuration, identified by ``config_version``."""

    config_version: Annotated[int, Range(1, MAX_SAFE_INT)]
    heartbeat_s: Annotated[int, Range(5, 3600)] = 30
    door_open_alarm_s: Annotated[int, Range(10, 3600)] = 120
    lock_release_s: Annotated[
        int, Range(1, 60), Doc("How long a released lock waits for the door to open.")
    ] = 8
    keypad_max_attempts: Annotated[int, Range(1, 100)] = 5
    keypad_lockout_s: Annotated[int, Range(1, 86_400)] = 60
    chilled_min_deci_celsius: DeciCelsius = 20
    chilled_max_deci_celsius: DeciCelsius = 60

    def __post_init__(self) -> None:
        validate(self)
        if self.chilled_min_deci_celsius >= self.chilled_max_deci_celsius:
            raise ValueError("chilled_min_deci_celsius: must be below chilled_max_deci_celsius")


@dataclass(frozen=True, slots=True)
class RequestRebirth:
    """Publish a birth (full state) now."""

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class Reboot:
    """Restart the locker firmware (a new boot_id follows)."""

    def __post_init__(self) -> None:
        validate(self)


CommandArgs = OpenCompartment | SyncCodes | SetConfig | RequestRebirth | Reboot

COMMAND_ARGS: dict[str, type[CommandArgs]] = {
    Action.OPEN_COMPARTMENT: OpenCompartment,
    Action.SYNC_CODES: SyncCodes,
    Action.SET_CONFIG: SetConfig,
    Action.REQUEST_REBIRTH: RequestRebirth,
    Action.REBOOT: Reboot,
}
"""The argument dataclass of each action: the one table that defines the commands."""

ACTION_OF: dict[type[CommandArgs], Action] = {cls: Action(a) for a, cls in COMMAND_ARGS.items()}

MAX_COMMAND_LIFETIME_MS = 60 * 60 * 1000
"""A command's ``expires_at - issued_at`` may not exceed one hour."""


@dataclass(frozen=True, slots=True)
class Command:
    """A signed instruction to one locker. ``sig`` is empty until :func:`protocol.auth.sign`."""

    TYPE: ClassVar[str] = "command"
    locker_id: LockerId
    command_id: CommandId
    counter: Annotated[int, Range(1, MAX_SAFE_INT), Doc("Per-locker, increasing.")]
    issued_at: Millis
    expires_at: Millis
    action: Action
    args: Annotated[CommandArgs, Discriminated("action", COMMAND_ARGS)]
    sig: Annotated[str, Pattern(r"([0-9a-f]{64})?")] = ""

    def __post_init__(self) -> None:
        validate(self)
        if not isinstance(self.args, COMMAND_ARGS[self.action]):
            raise ValueError(f"args: {type(self.args).__name__} are not the args of {self.action}")
        if self.expires_at <= self.issued_at:
            raise ValueError("expires_at: must be after issued_at")

    @classmethod
    def of(
        cls,
        locker_id: str,
        command_id: str,
        counter: int,
        issued_at: int,
        expires_at: int,
        args: CommandArgs,
    ) -> Command:
        """Return an unsigned command carrying ``args``, its action taken from their type."""
        return cls(
            locker_id, command_id, counter, issued_at, expires_at, ACTION_OF[type(args)], args
        )


class ResultStatus(enum.StrEnum):
    OK = "ok"  # executed; see outcome
    FAILED = "failed"  # executed, but the hardware did not do it; see outcome
    REFUSED = "refused"  # not executed; see reason


class Outcome(enum.StrEnum):
    OPENED = "opened"
    ALREADY_OPEN = "already_open"
    DOOR_JAMMED = "door_jammed"
    APPLIED = "applied"
    PAGES_PENDING = "pages_pending"
    REBIRTH_SENT = "rebirth_sent"
    REBOOTING = "rebooting"


class RefusalReason(enum.StrEnum):
    MALFORMED = "malformed"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    WRONG_LOCKER = "wrong_locker"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    LIFETIME_TOO_LONG = "lifetime_too_long"
    REPLAYED = "replayed"
    COUNTER_TOO_OLD = "counter_too_old"
    UNKNOWN_ACTION = "unknown_action"
    UNKNOWN_COMPARTMENT = "unknown_compartment"
    OUT_OF_SERVICE = "out_of_service"
    CACHE_VERSION_MISMATCH = "cache_version_mismatch"
    BUSY = "busy"


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What became of one command. Takes a sequence number and is kept until acknowledged."""

    TYPE: ClassVar[str] = "result"
    locker_id: LockerId
    boot_id: BootId
    seq: Seq
    ts: Millis
    command_id: CommandId | None
    status: ResultStatus
    action: Action | None = None
    outcome: Outcome | None = None
    reason: RefusalReason | None = None
    compartment: CompartmentId | None = None
    cache_version: Version | None = None
    missing_pages: (
        Annotated[tuple[Annotated[int, Range(1, 10_000)], ...], MaxLength(10_000)] | None
    ) = None
    config_version: Version | None = None
    detail: ShortText | None = None

    def __post_init__(self) -> None:
        validate(self)
        if self.status is ResultStatus.REFUSED and self.reason is None:
            raise ValueError("reason: required when status is refused")
        if self.status is not ResultStatus.REFUSED and self.outcome is None:
            raise ValueError("outcome: required when status is ok or failed")


# ---------------------------------------------------------------------------------------------
# Acknowledgements and controller presence (controller → locker)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeqRange:
    """An inclusive range of sequence numbers."""

    first: Seq
    last: Seq

    def __post_init__(self) -> None:
        validate(self)
        if self.last < self.first:
            raise ValueError("last: must not be below first")


@dataclass(frozen=True, slots=True)
class Ack:
    """The controller has durably stored these sequence numbers of ``boot_id``.

    The locker removes them from its buffer; anything not acknowledged is sent again.
    """

    TYPE: ClassVar[str] = "ack"
    locker_id: LockerId
    boot_id: BootId
    ranges: Annotated[tuple[SeqRange, ...], MaxLength(1000)]
    ts: Millis
    sig: Annotated[str, Pattern(r"([0-9a-f]{64})?")] = ""

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class ControllerPresence:
    """Whether one controller instance is connected. Retained; offline is its last will."""

    TYPE: ClassVar[str] = "controller_presence"
    instance: Annotated[str, Pattern(r"[A-Za-z0-9_.-]{1,64}")]
    state: PresenceState
    ts: Millis

    def __post_init__(self) -> None:
        validate(self)


# ---------------------------------------------------------------------------------------------
# Provisioning (an unprovisioned locker on the shared provisioning identity, see §3.5)
# ---------------------------------------------------------------------------------------------

RequestId = Annotated[
    str,
    Pattern(r"[0-9a-f]{32}"),
    Doc("16 random bytes in lowercase hex, new for every provisioning request."),
]
ProvisioningToken = Annotated[
    str,
    Pattern(r"[A-Za-z0-9_-]{8,200}"),
    Doc("The one-time provisioning token a technician gave the locker, as issued."),
]
Hex32 = Annotated[str, Pattern(r"[0-9a-f]{64}"), Doc("32 bytes in lowercase hex.")]


class ProvisionStatus(enum.StrEnum):
    OK = "ok"  # the sealed credentials are in ``sealed``
    REFUSED = "refused"  # nothing is handed out; see reason


class ProvisionRefusal(enum.StrEnum):
    INVALID_TOKEN = "invalid_token"  # noqa: S105 - unknown, used, expired, or another locker's
    UNAVAILABLE = "unavailable"  # the controller could not decide now: ask again later


@dataclass(frozen=True, slots=True)
class ProvisionRequest:
    """An unprovisioned locker asks for its credentials with its one-time token."""

    TYPE: ClassVar[str] = "provision_request"
    locker_id: LockerId
    request_id: RequestId
    token: ProvisioningToken
    ts: Millis
    firmware: Annotated[str, Pattern(r"[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?")] | None = None
    model: Annotated[str, MaxLength(64)] | None = None

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class ProvisionResponse:
    """The controller's answer to one provisioning request: the locker's credentials sealed
    with a key derived from the token (``ok``), or a refusal. Authenticated either way."""

    TYPE: ClassVar[str] = "provision_response"
    locker_id: LockerId
    request_id: RequestId
    status: ProvisionStatus
    nonce: Annotated[
        str, Pattern(r"[0-9a-f]{32}"), Doc("16 random bytes chosen by the controller, hex.")
    ]
    ts: Millis
    mac: Annotated[str, Pattern(r"[0-9a-f]{64}"), Doc("HMAC-SHA256 under the MAC key, hex.")]
    sealed: (
        Annotated[
            str,
            Pattern(r"([0-9a-f]{2}){1,4096}"),
            Doc("The encrypted credentials, lowercase hex (present when status is ok)."),
        ]
        | None
    ) = None
    reason: ProvisionRefusal | None = None

    def __post_init__(self) -> None:
        validate(self)
        if self.status is ProvisionStatus.OK and (self.sealed is None or self.reason is not None):
            raise ValueError("sealed: required (and reason absent) when status is ok")
        if self.status is ProvisionStatus.REFUSED and (
            self.reason is None or self.sealed is not None
        ):
            raise ValueError("reason: required (and sealed absent) when status is refused")


@dataclass(frozen=True, slots=True)
class LockerCredentials:
    """What a sealed provisioning response carries: everything a locker needs to join."""

    mqtt_username: Annotated[str, Pattern(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")]
    mqtt_password: Annotated[str, Pattern(r"[\x21-\x7e]{1,128}")]
    command_key: Hex32
    code_key: Hex32
    topic_root: Annotated[str, Pattern(r"[A-Za-z0-9_.-]{1,64}(/[A-Za-z0-9_.-]{1,64}){0,7}")]

    def __post_init__(self) -> None:
        validate(self)


DeviceMessage = Presence | Birth | Event | Telemetry | CommandResult
ControllerMessage = Command | Ack | ControllerPresence
ProvisioningMessage = ProvisionRequest | ProvisionResponse
Message = DeviceMessage | ControllerMessage | ProvisioningMessage

DEVICE_MESSAGES: dict[str, type[DeviceMessage]] = {
    m.TYPE: m for m in (Presence, Birth, Event, Telemetry, CommandResult)
}
CONTROLLER_MESSAGES: dict[str, type[ControllerMessage]] = {
    m.TYPE: m for m in (Command, Ack, ControllerPresence)
}
SEQUENCED: tuple[type[DeviceMessage], ...] = (Birth, Event, CommandResult)
"""Messages that take a sequence number and stay in the locker's buffer until acknowledged."""
PROVISIONING_MESSAGES: dict[str, type[ProvisioningMessage]] = {
    m.TYPE: m for m in (ProvisionRequest, ProvisionResponse)
}
"""Messages of the provisioning topics (§3.5), outside the per-locker channels."""
