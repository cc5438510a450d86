"""Simulated villagers: they receive the texts and walk to the locker.

:class:`VillagerSender` is the demo's SMS sender. Every text is printed (as the SMS gateway
would deliver it); a pickup code sends the villager to the keypad of the locker the parcel went
to after a while, where the simulated person types it, takes the parcel and closes the door; a
drop-off code sends the farmer with the produce. A few never come (the parcel expires and goes
back to the carrier), a few first mistype the code.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from firmware_sim.cabinet import PhysicalActionError
from firmware_sim.fleet import MqttFleet
from firmware_sim.people import Delays

log = logging.getLogger("lockerfleet.sms")

_CODE = re.compile(r"(取件码|投件码)([0-9]{6})")
_COMPARTMENT = re.compile(r"([A-Za-z0-9]{1,8})号格口")


class FleetSource(Protocol):
    """Anything with a ``fleet`` attribute (the stack, once started)."""

    @property
    def fleet(self) -> MqttFleet | None: ...


@dataclass
class VillagerSender:
    """An :class:`~controller.services.notifications.SmsSender` with villagers behind it."""

    fleet_of: FleetSource
    come_after_s: tuple[float, float] = (20.0, 120.0)
    no_show: float = 0.05
    mistype: float = 0.1
    seed: int = 1
    echo: bool = True
    destinations: dict[str, str] = field(default_factory=dict)
    """Phone → locker id, told by whoever deposited or booked (the text names the place)."""
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._tasks: set[asyncio.Task[None]] = set()
        self._staying_home = False

    async def send(self, to: str, body: str) -> None:
        self.counts["texts"] += 1
        if self.echo:
            log.info("SMS %s: %s", to, body)
        match = _CODE.search(body)
        locker_id = self.destinations.get(to)
        if match is None or locker_id is None:
            return
        if self._rng.random() < self.no_show:
            self.counts["never_came"] += 1
            return
        delay = self._rng.uniform(*self.come_after_s)
        kind, code = match.groups()
        where = _COMPARTMENT.search(body)
        label = where.group(1) if kind == "投件码" and where else None
        task = asyncio.create_task(self._visit(locker_id, code, label, delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _visit(self, locker_id: str, code: str, drop_off: str | None, delay: float) -> None:
        """Go to the locker after ``delay``; ``drop_off`` is the compartment the text named
        for produce going out (None: a parcel to pick up)."""
        await asyncio.sleep(delay)
        fleet = self.fleet_of.fleet
        if fleet is None or self._staying_home:
            return
        try:
            await self._at_the_keypad(fleet, locker_id, code, drop_off)
        except PhysicalActionError as exc:  # somebody else's door, a full compartment, ...
            self.counts["could_not"] += 1
            log.info("villager at %s could not: %s", locker_id, exc)

    async def _at_the_keypad(
        self, fleet: MqttFleet, locker_id: str, code: str, drop_off: str | None
    ) -> None:
        if self._rng.random() < self.mistype:
            wrong = f"{(int(code) + 1) % 1_000_000:06d}"
            await asyncio.to_thread(fleet.keypad_enter, locker_id, wrong)
            self.counts["mistyped"] += 1
            await asyncio.sleep(3)
        if drop_off is not None:
            await self._drop_off(fleet, locker_id, code, drop_off)
        else:
            locker = fleet.lockers[locker_id]
            await asyncio.to_thread(
                fleet.run, lambda: fleet.people.recipient_picks_up(locker, code, delays=Delays())
            )
            self.counts["pickups_started"] += 1

    async def _drop_off(self, fleet: MqttFleet, locker_id: str, code: str, label: str) -> None:
        """A farmer types the drop-off code, and once the named compartment's lock releases,
        puts the produce in and closes the door."""
        await asyncio.to_thread(fleet.keypad_enter, locker_id, code)
        for _ in range(100):
            view = await asyncio.to_thread(fleet.view, locker_id)
            if label in view.released:
                await self._fill(fleet, locker_id, label)
                return
            await asyncio.sleep(0.1)
        self.counts["dropoff_refused"] += 1

    async def _fill(self, fleet: MqttFleet, locker_id: str, label: str) -> None:
        people, locker = fleet.people, fleet.lockers[locker_id]
        for step, pause in ((people.open, 1.0), (people.put, 1.5), (people.close, 1.0)):
            await asyncio.sleep(pause)
            await asyncio.to_thread(fleet.run, lambda step=step: step(locker, label))
        self.counts["dropoffs"] += 1

    async def finish(self, within: float = 60.0) -> None:
        """Let nobody new set out, and wait for those already at a locker to finish."""
        self._staying_home = True
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=within)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
