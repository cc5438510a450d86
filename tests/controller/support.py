"""Test helpers: a recording SMS sender, and a scripted locker that speaks the protocol
directly into the ingest (for service tests that need no broker)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controller.clock import to_ms
from controller.runtime import Runtime
from controller.services.context import Actor
from controller.services.deposits import DepositRequest
from controller.services.ingest import BatchReport, Inbound
from controller.services.views import DepositStarted
from controller.testing.seed import DEFAULT_LAYOUT, Seeded
from protocol.codec import encode
from protocol.messages import (
    Birth,
    CommandResult,
    CompartmentState,
    DeviceMessage,
    DoorState,
    Event,
    EventData,
    LockState,
    Presence,
    PresenceState,
    ResultStatus,
    SizeClass,
    TemperatureClass,
)
from protocol.topics import CHANNEL_OF_TYPE


@dataclass
class RecordingSender:
    """Keeps every text sent, so tests can read pickup codes the way a villager would."""

    sent: list[tuple[str, str]] = field(default_factory=list)

    async def send(self, to: str, body: str) -> None:
        self.sent.append((to, body))

    def code_for(self, phone: str) -> str:
        """The newest six-digit code texted to ``phone``."""
        for to, body in reversed(self.sent):
            match = re.search(r"(?:取件码|投件码)([0-9]{6})", body)
            if to == phone and match:
                return match.group(1)
        raise AssertionError(f"no code was texted to {phone}")

    def latest_code(self, phone: str) -> str | None:
        """:meth:`code_for`, or None while no code was texted (for waiting on one)."""
        try:
            return self.code_for(phone)
        except AssertionError:
            return None


@dataclass
class ScriptedLocker:
    """Builds a locker's messages with the right envelope and feeds them to the ingest."""

    runtime: Runtime
    locker_id: str
    boot_id: int = 1
    seq: int = 0
    connection: int = 1

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def now_ms(self) -> int:
        return to_ms(self.runtime.ctx.clock.now())

    def topic(self, message: DeviceMessage) -> str:
        return self.runtime.ctx.topics.locker(self.locker_id, CHANNEL_OF_TYPE[message.TYPE])

    async def send(self, *messages: DeviceMessage) -> BatchReport:
        at: datetime = self.runtime.ctx.clock.now()
        batch = [Inbound(self.topic(m), encode(m), at) for m in messages]
        return await self.runtime.bridge.ingest.handle(batch)  # type: ignore[union-attr]

    def presence(self, state: PresenceState = PresenceState.ONLINE) -> Presence:
        return Presence(
            self.locker_id, self.boot_id, self.seq, self.connection, state, self.now_ms()
        )

    def birth(self, compartments: list[CompartmentState], cache_version: int = 0) -> Birth:
        return Birth(
            self.locker_id,
            self.boot_id,
            self._next(),
            self.now_ms(),
            "1.0.0",
            "sim",
            self.connection,
            cache_version,
            0,
            0,
            tuple(compartments),
        )

    def event(self, data: EventData) -> Event:
        return Event.of(self.locker_id, self.boot_id, self._next(), self.now_ms(), data)

    def result(self, command_id: str | None, status: ResultStatus, **fields: Any) -> CommandResult:
        """The locker's answer to a command, taking the next sequence number."""
        return CommandResult(self.locker_id, self.boot_id, self._next(), self.now_ms(),
                             command_id, status, **fields)  # fmt: skip

    async def come_online(self, labels: list[tuple[str, SizeClass, TemperatureClass]]) -> None:
        compartments = [
            CompartmentState(label, size, temp, DoorState.CLOSED, LockState.LOCKED, False, True)
            for label, size, temp in labels
        ]
        await self.send(self.presence(), self.birth(compartments))


LAYOUT = [(c.label, c.size, c.temperature) for c in DEFAULT_LAYOUT]
"""The test layout as a scripted locker reports it in its birth."""


async def actor(runtime: Runtime, seeded: Seeded, role: str) -> Actor:
    """The actor behind the seeded user ``role`` (admin, courier, agent, ...)."""
    found = await runtime.services.admin.authenticate(seeded.tokens[role])
    assert found is not None
    return found


def deposit_body(
    locker_id: str, tracking: str = "SF2000000001", **extra: object
) -> dict[str, object]:
    """A courier's deposit request as the API takes it (an S parcel, consent given in person)."""
    return {
        "tracking_number": tracking,
        "locker_id": locker_id,
        "size": "S",
        "recipient_phone": "13900000001",
        "consent_method": "in_person",
        **extra,
    }


def auth(seeded: Seeded, role: str) -> dict[str, str]:
    """The Authorization header of the seeded user ``role``."""
    return {"Authorization": f"Bearer {seeded.tokens[role]}"}


async def start_deposit(
    runtime: Runtime,
    seeded: Seeded,
    locker_id: str,
    tracking: str,
    phone: str,
    *,
    size: SizeClass = SizeClass.S,
    temperature: TemperatureClass = TemperatureClass.AMBIENT,
    consent: str = "app",
) -> DepositStarted:
    """The seeded courier starts a deposit (consent recorded on the spot)."""
    courier = await actor(runtime, seeded, "courier")
    request = DepositRequest(tracking, locker_id, size, temperature, phone, consent_method=consent)
    return await runtime.services.deposits.start(courier, request)
