"""Command authentication: signatures, freshness and the locker's anti-replay window.

Each locker holds a 32-byte *command key* shared only with the controller. The controller signs
every command (and every acknowledgement) with HMAC-SHA256 over a domain prefix and the
canonical JSON of the message without its ``sig`` (:mod:`protocol.canonical`). The locker runs
:func:`check_command` on what it receives; the checks, in this order, and the refusal each gives:

1. the payload is a JSON object of protocol version 1 with ``type`` ``command`` (``malformed``,
   ``unsupported_version``);
2. it has a signature (``unsigned``), and the signature is right (``bad_signature``);
3. its fields are valid (``unknown_action``, ``malformed``);
4. it is addressed to this locker (``wrong_locker``);
5. it is not a repeat of a command already taken: a command whose ``command_id`` the window
   remembers is ignored *silently* (no result at all; the result of the first copy is still in
   the locker's buffer until acknowledged), so a QoS 1 redelivery never runs twice and never
   draws a ``replayed`` refusal;
6. ``expires_at - issued_at`` is at most one hour (``lifetime_too_long``), it has not expired
   (``expired``) and was not issued more than :data:`CLOCK_TOLERANCE_MS` in the future by the
   locker's clock (``not_yet_valid``);
7. its counter is fresh (``replayed``, ``counter_too_old``; see :class:`ReplayWindow`).

The signature is checked before anything that depends on the content, so an unauthenticated
sender learns nothing but ``unsigned`` or ``bad_signature``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from protocol.canonical import canonical_json
from protocol.codec import encode_object, message_from_object, message_to_object, parse_json
from protocol.errors import RemoteProtocolError
from protocol.fields import Pattern
from protocol.messages import (
    MAX_COMMAND_LIFETIME_MS,
    PROTOCOL_VERSION,
    Ack,
    Command,
    RefusalReason,
)

COMMAND_DOMAIN = b"lockerfleet/v1/command\n"
ACK_DOMAIN = b"lockerfleet/v1/ack\n"
KEY_BYTES = 32
CLOCK_TOLERANCE_MS = 2 * 60 * 1000
"""How far in the future (by the locker's clock) ``issued_at`` may lie."""

_COMMAND_ID = Pattern(r"[A-Za-z0-9_-]{8,64}")


def _mac(key: bytes, domain: bytes, obj: dict[str, Any]) -> str:
    body = {k: v for k, v in obj.items() if k != "sig"}
    return hmac.new(key, domain + canonical_json(body), hashlib.sha256).hexdigest()


def signing_input(domain: bytes, obj: dict[str, Any]) -> bytes:
    """Return the exact bytes that are MAC'd for a wire object (``sig`` removed)."""
    return domain + canonical_json({k: v for k, v in obj.items() if k != "sig"})


def sign_command(command: Command, key: bytes) -> Command:
    """Return ``command`` with its ``sig`` set."""
    return replace(command, sig=_mac(key, COMMAND_DOMAIN, message_to_object(command)))


def sign_ack(ack: Ack, key: bytes) -> Ack:
    """Return ``ack`` with its ``sig`` set."""
    return replace(ack, sig=_mac(key, ACK_DOMAIN, message_to_object(ack)))


def encode_signed_ack(ack: Ack, key: bytes) -> bytes:
    """Return the wire bytes of ``ack`` signed with ``key``.

    The same bytes as ``encode(sign_ack(ack, key))``, for a controller that sends thousands of
    acks a second: the message is turned into its wire object once instead of twice.
    """
    obj = message_to_object(ack)
    obj["sig"] = _mac(key, ACK_DOMAIN, obj)  # ``sig`` is the last field of an Ack
    return encode_object(obj)


def _signature_ok(obj: dict[str, Any], key: bytes, domain: bytes) -> bool:
    sig = obj.get("sig")
    if not isinstance(sig, str):
        return False
    try:
        expected = _mac(key, domain, obj)
    except RemoteProtocolError:
        return False
    return hmac.compare_digest(expected, sig)


@dataclass
class ReplayWindow:
    """The locker's memory of command counters: the highest seen and a 64-counter window.

    Bit ``i`` of ``seen`` is set when counter ``highest - i`` was accepted. A counter above
    ``highest`` is fresh; one inside the window is fresh unless its bit is set (``replayed``);
    one below the window is refused (``counter_too_old``). This tolerates commands that arrive
    out of order (retries, several controller replicas) without ever accepting one twice.

    ``recent`` maps the ``command_id`` of each accepted command whose counter is still inside
    the window to that counter, so that a second copy of a command is recognised as a repeat
    (:meth:`is_repeat`) and ignored rather than refused. All three must survive reboots
    (non-volatile memory).
    """

    SIZE: ClassVar[int] = 64
    highest: int = 0
    seen: int = 0
    recent: dict[str, int] = field(default_factory=dict)

    def is_repeat(self, command_id: str) -> bool:
        """Return whether a command with this id was accepted and is still remembered."""
        return command_id in self.recent

    def check(self, counter: int) -> RefusalReason | None:
        """Return why ``counter`` must be refused, or ``None`` if it is fresh."""
        if counter > self.highest:
            return None
        offset = self.highest - counter
        if offset >= self.SIZE:
            return RefusalReason.COUNTER_TOO_OLD
        if self.seen >> offset & 1:
            return RefusalReason.REPLAYED
        return None

    def accept(self, counter: int, command_id: str | None = None) -> None:
        """Record ``counter`` (and the command's id) as used.

        Call only after :meth:`check` returned ``None``. Ids whose counters fall out of the
        window are forgotten: a copy of such a command is refused as ``counter_too_old``.
        """
        if counter > self.highest:
            shift = counter - self.highest
            self.seen = (
                ((self.seen << shift) | 1) & ((1 << self.SIZE) - 1) if shift < self.SIZE else 1
            )
            self.highest = counter
            oldest = self.highest - self.SIZE
            self.recent = {cid: c for cid, c in self.recent.items() if c > oldest}
        else:
            self.seen |= 1 << (self.highest - counter)
        if command_id is not None:
            self.recent[command_id] = counter


@dataclass(frozen=True, slots=True)
class CommandCheck:
    """The verdict on a received command, one of three:

    * ``accepted``: execute ``command`` and send its result;
    * ``repeat``: a copy of a command already taken; do nothing and send nothing;
    * otherwise refused: send a ``refused`` result with ``reason``.

    ``command`` is set when it passed the checks through the field validation. ``command_id``
    is whatever id could be read, for the result.
    """

    command_id: str | None
    command: Command | None = None
    reason: RefusalReason | None = None
    repeat: bool = False

    @property
    def accepted(self) -> bool:
        return self.reason is None and self.command is not None and not self.repeat

    @property
    def refused(self) -> bool:
        return self.reason is not None


def _readable_id(obj: dict[str, Any]) -> str | None:
    value = obj.get("command_id")
    if isinstance(value, str) and _COMMAND_ID.compiled.fullmatch(value):
        return value
    return None


def check_command(
    payload: bytes | dict[str, Any],
    *,
    locker_id: str,
    key: bytes,
    now_ms: int,
    window: ReplayWindow,
) -> CommandCheck:
    """Run the locker's checks on a received command; never raises.

    On acceptance the counter and id are recorded in ``window``; on refusal or a repeat
    ``window`` is unchanged.
    """
    try:
        obj = parse_json(payload) if isinstance(payload, bytes) else payload
    except RemoteProtocolError:
        return CommandCheck(None, reason=RefusalReason.MALFORMED)
    command_id = _readable_id(obj)
    version = obj.get("v")
    if type(version) is int and version != PROTOCOL_VERSION:
        return CommandCheck(command_id, reason=RefusalReason.UNSUPPORTED_VERSION)
    if type(version) is not int or obj.get("type") != Command.TYPE:
        return CommandCheck(command_id, reason=RefusalReason.MALFORMED)
    if not obj.get("sig"):
        return CommandCheck(command_id, reason=RefusalReason.UNSIGNED)
    if not _signature_ok(obj, key, COMMAND_DOMAIN):
        return CommandCheck(command_id, reason=RefusalReason.BAD_SIGNATURE)
    try:
        command = message_from_object(obj, {Command.TYPE: Command})
    except RemoteProtocolError as exc:
        unknown_action = exc.path == "action" or (exc.path == "args" and "no body" in exc.message)
        reason = RefusalReason.UNKNOWN_ACTION if unknown_action else RefusalReason.MALFORMED
        return CommandCheck(command_id, reason=reason)
    if command.locker_id != locker_id:
        return CommandCheck(command.command_id, command, RefusalReason.WRONG_LOCKER)
    if window.is_repeat(command.command_id):
        return CommandCheck(command.command_id, command, repeat=True)
    verdict = freshness(command, locker_id=locker_id, now_ms=now_ms, window=window)
    if verdict is not None:
        return CommandCheck(command.command_id, command, verdict)
    window.accept(command.counter, command.command_id)
    return CommandCheck(command.command_id, command)


def freshness(
    command: Command, *, locker_id: str, now_ms: int, window: ReplayWindow
) -> RefusalReason | None:
    """Return why an authentic ``command`` must still be refused (checks 4, 6 and 7), or
    ``None``. (The repeat rule, check 5, needs the id memory: see :func:`check_command`.)"""
    if command.locker_id != locker_id:
        return RefusalReason.WRONG_LOCKER
    if command.expires_at - command.issued_at > MAX_COMMAND_LIFETIME_MS:
        return RefusalReason.LIFETIME_TOO_LONG
    if now_ms > command.expires_at:
        return RefusalReason.EXPIRED
    if command.issued_at > now_ms + CLOCK_TOLERANCE_MS:
        return RefusalReason.NOT_YET_VALID
    return window.check(command.counter)


def check_ack(payload: bytes | dict[str, Any], *, locker_id: str, key: bytes) -> Ack | None:
    """Return the acknowledgement if it is authentic and addressed to ``locker_id``, else None.

    A forged acknowledgement would make a locker drop events the controller never stored, so
    lockers act only on signed ones. Replaying an old acknowledgement is harmless.
    """
    try:
        obj = parse_json(payload) if isinstance(payload, bytes) else payload
        if obj.get("type") != Ack.TYPE or not _signature_ok(obj, key, ACK_DOMAIN):
            return None
        ack = message_from_object(obj, {Ack.TYPE: Ack})
    except RemoteProtocolError:
        return None
    return ack if ack.locker_id == locker_id else None


def new_key() -> bytes:
    """Return a fresh random 32-byte key (for provisioning)."""
    return secrets.token_bytes(KEY_BYTES)
