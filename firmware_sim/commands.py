"""Commands at the locker: checking them, executing them, answering them (protocol §8-§9).

A :class:`CommandDesk` lives for one boot. It runs :func:`protocol.auth.check_command` by the
board's own clock (skew included) against the non-volatile anti-replay window, which also
remembers the ids of the commands taken: a second copy of a command is ignored silently (it is
never run twice, and its first result stays buffered until acknowledged). Every refusal becomes a
``refused`` result with its reason. What each action does:

* ``open_compartment``: ``unknown_compartment``, ``out_of_service``, ``busy`` (lock released and
  the door not yet open, or more than 20 opens in 60 s), ``already_open``; otherwise the lock is
  released and the result follows the door (:mod:`firmware_sim.compartments`);
* ``sync_codes``: the page goes to :class:`protocol.codes.CodeCache` and is persisted first;
* ``set_config``: put in force and persisted, ``config_applied``, then the result with the
  version in force (an older configuration does not roll back a newer one);
* ``request_rebirth``: a birth, then the result;
* ``reboot``: the result, then a restart after :data:`REBOOT_DELAY_MS`.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from firmware_sim.compartments import Doors, ReleaseRequest
from firmware_sim.door import DoorPhase
from firmware_sim.keypad import Screen
from firmware_sim.settings import Settings
from firmware_sim.store import NonVolatile, NvStore
from firmware_sim.uplink import Uplink
from protocol.auth import check_command
from protocol.messages import (
    Action,
    Birth,
    Command,
    CommandResult,
    ConfigApplied,
    DoorCause,
    OpenCompartment,
    OpenPurpose,
    Outcome,
    RefusalReason,
    RequestRebirth,
    ResultStatus,
    SetConfig,
    SyncCodes,
)

if TYPE_CHECKING:
    from firmware_sim.locker import Locker

REBOOT_DELAY_MS = 1_000
"""Between accepting a reboot command and restarting (so that its result can go out)."""
MAX_OPENS_PER_WINDOW = 20
OPEN_WINDOW_MS = 60_000
"""At most 20 ``open_compartment`` commands are executed in any 60 s; more are ``busy``."""

_DEPOSIT_PURPOSES = {OpenPurpose.DEPOSIT, OpenPurpose.DROPOFF}


class CommandDesk:
    """Checks and executes the commands of one boot of one locker."""

    __slots__ = (
        "_recent_opens",
        "board",
        "command_key",
        "counters",
        "doors",
        "locker_id",
        "nv",
        "screen",
        "store",
        "uplink",
    )

    def __init__(
        self,
        *,
        locker_id: str,
        command_key: bytes,
        nv: NonVolatile,
        store: NvStore,
        uplink: Uplink,
        doors: Doors,
        screen: Screen,
        board: Locker,
        counters: Counter[str],
    ) -> None:
        self.locker_id = locker_id
        self.command_key = command_key
        self.nv = nv
        self.store = store
        self.uplink = uplink
        self.doors = doors
        self.screen = screen
        self.board = board
        """The locker this boot runs on (its settings, time, birth and reboots)."""
        self.counters = counters
        self._recent_opens: list[int] | None = None
        """When the remote opens of the last minute happened (at most 20: a list is enough;
        made at the first remote open)."""

    def settings(self) -> Settings:
        return self.board.current_settings()

    def rtc(self) -> int:
        """The board's real-time clock: judges expiry."""
        return self.board.rtc_ms()

    def clock(self) -> int:
        """Monotonic time (screen texts, reboot delay, the open rate limit)."""
        return self.board.clock.now_ms()

    def birth(self, seq: int, ts: int, pending: int) -> Birth:
        return self.board._birth(seq, ts, pending)

    def reboot_at(self, at_ms: int) -> None:
        self.board._schedule_reboot(at_ms)

    def settings_changed(self, old: Settings, new: Settings) -> None:
        self.board._settings_changed(old, new)

    def handle(self, payload: bytes) -> None:
        """Check a received command and execute it, refuse it, or ignore a repeat."""
        check = check_command(
            payload,
            locker_id=self.locker_id,
            key=self.command_key,
            now_ms=self.rtc(),
            window=self.nv.replay,
        )
        if check.repeat:  # a copy of a command already taken: its result is still buffered
            self.counters["command_repeats_ignored"] += 1
            return
        command = check.command
        if command is None or not check.accepted:
            reason = check.reason or RefusalReason.MALFORMED
            self.counters[f"refused_{reason.value}"] += 1
            action = command.action if command is not None else None
            self.refuse(check.command_id, action, reason)
            return
        self.store.commit(self.nv)
        self.counters[f"command_{command.action.value}"] += 1
        self._execute(command)

    def _execute(self, command: Command) -> None:
        args = command.args
        cid = command.command_id
        if isinstance(args, OpenCompartment):
            self._open(cid, args)
        elif isinstance(args, SyncCodes):
            verdict = self.nv.codes.apply(args)
            self.store.commit(self.nv)
            if verdict.reason is not None:
                self.refuse(
                    cid, Action.SYNC_CODES, verdict.reason, cache_version=verdict.cache_version
                )
            elif verdict.outcome is not None:
                self.result(
                    cid,
                    ResultStatus.OK,
                    Action.SYNC_CODES,
                    verdict.outcome,
                    cache_version=verdict.cache_version,
                    missing_pages=verdict.missing_pages or None,
                )
        elif isinstance(args, SetConfig):
            self._apply_config(cid, args)
        elif isinstance(args, RequestRebirth):
            self.uplink.birth(self.birth)
            self.result(cid, ResultStatus.OK, Action.REQUEST_REBIRTH, Outcome.REBIRTH_SENT)
        else:
            self.result(cid, ResultStatus.OK, Action.REBOOT, Outcome.REBOOTING)
            self.reboot_at(self.clock() + REBOOT_DELAY_MS)

    def _open(self, command_id: str, args: OpenCompartment) -> None:
        state = self.doors.states.get(args.compartment)
        action = Action.OPEN_COMPARTMENT
        if state is None:
            self.refuse(command_id, action, RefusalReason.UNKNOWN_COMPARTMENT, args.compartment)
        elif not self.doors.in_service(state):
            self.refuse(command_id, action, RefusalReason.OUT_OF_SERVICE, args.compartment)
        elif state.phase is DoorPhase.RELEASED or not self._open_allowed():
            self.refuse(command_id, action, RefusalReason.BUSY, args.compartment)
        else:
            verb = "请存件" if args.purpose in _DEPOSIT_PURPOSES else "请取件"
            self.screen.show(args.screen_text or f"{verb} {state.id}", self.clock())
            request = ReleaseRequest(DoorCause.COMMAND, command_id, args.purpose)
            self.doors.release(state.id, request)

    def _open_allowed(self) -> bool:
        """The locker-side rate limit on remote opens (protocol §9: 20 in 60 s)."""
        now = self.clock()
        recent = self._recent_opens
        if recent is None:
            recent = self._recent_opens = []
        while recent and now - recent[0] >= OPEN_WINDOW_MS:
            del recent[0]
        if len(recent) >= MAX_OPENS_PER_WINDOW:
            return False
        recent.append(now)
        return True

    def _apply_config(self, command_id: str, config: SetConfig) -> None:
        current = self.settings()
        if config.config_version >= current.config_version:
            new = Settings.from_command(config)
            self.nv.settings = new
            self.store.commit(self.nv)
            self.settings_changed(current, new)
            self.uplink.event(ConfigApplied(new.config_version))
        self.result(
            command_id,
            ResultStatus.OK,
            Action.SET_CONFIG,
            Outcome.APPLIED,
            config_version=self.settings().config_version,
        )

    def result(
        self,
        command_id: str,
        status: ResultStatus,
        action: Action,
        outcome: Outcome,
        compartment: str | None = None,
        *,
        cache_version: int | None = None,
        missing_pages: tuple[int, ...] | None = None,
        config_version: int | None = None,
    ) -> None:
        """Buffer the result of an executed command."""
        locker_id, boot_id = self.locker_id, self.uplink.boot_id

        def build(seq: int, ts: int) -> CommandResult:
            return CommandResult(
                locker_id,
                boot_id,
                seq,
                ts,
                command_id,
                status,
                action=action,
                outcome=outcome,
                compartment=compartment,
                cache_version=cache_version,
                missing_pages=missing_pages,
                config_version=config_version,
            )

        self.uplink.result(build)

    def answer_open(
        self, command_id: str, status: ResultStatus, outcome: Outcome, compartment: str
    ) -> None:
        """Buffer the result of an ``open_compartment`` once the door has decided it."""
        self.result(command_id, status, Action.OPEN_COMPARTMENT, outcome, compartment)

    def refuse(
        self,
        command_id: str | None,
        action: Action | None,
        reason: RefusalReason,
        compartment: str | None = None,
        *,
        cache_version: int | None = None,
    ) -> None:
        """Buffer a ``refused`` result."""
        locker_id, boot_id = self.locker_id, self.uplink.boot_id

        def build(seq: int, ts: int) -> CommandResult:
            return CommandResult(
                locker_id,
                boot_id,
                seq,
                ts,
                command_id,
                ResultStatus.REFUSED,
                action=action,
                reason=reason,
                compartment=compartment,
                cache_version=cache_version,
            )

        self.uplink.result(build)
