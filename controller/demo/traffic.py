"""Simulated couriers and village agents using the real HTTP API, at a paced rate.

Couriers of every carrier deposit parcels for villagers at random lockers (sizes drawn like a
real mix: mostly small), collect the produce farmers dropped off and take back what expired.
Village agents book compartments for produce going out (apples; cherries go chilled). Every
call goes through the public API with the users' own tokens, exactly as their apps would.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from dataclasses import dataclass, field

import httpx

from controller.demo.county import County
from controller.demo.villagers import VillagerSender

log = logging.getLogger("lockerfleet.demo.traffic")

SIZES = [("S", 0.5), ("M", 0.3), ("L", 0.15), ("XL", 0.05)]


@dataclass
class Traffic:
    base_url: str
    county: County
    villagers: VillagerSender
    deposits_per_minute: float = 30.0
    produce_share: float = 0.15
    seed: int = 1
    counts: Counter[str] = field(default_factory=Counter)
    created: set[str] = field(default_factory=set)
    """Tracking numbers of the parcels the API said it created (deposits and bookings)."""

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._serial = 0

    def _token(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.county.tokens[user]}"}

    def _phone(self) -> str:
        self._serial += 1
        return f"139{self.seed % 100:02d}{self._serial:06d}"

    async def run(self) -> None:
        """Generate traffic until cancelled."""
        couriers = [u for u in self.county.tokens if u.startswith("courier-")]
        agents = [u for u in self.county.tokens if u.startswith("agent-")]
        lockers = sorted(self.county.lockers)
        interval = 60.0 / max(self.deposits_per_minute, 0.01)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            rounds = 0
            while True:
                await asyncio.sleep(self._rng.expovariate(1.0 / interval))
                rounds += 1
                try:
                    if agents and self._rng.random() < self.produce_share:
                        await self._book_produce(http, self._rng.choice(agents), lockers)
                    else:
                        await self._deposit(http, self._rng.choice(couriers), lockers)
                    if rounds % 20 == 0:
                        for courier in couriers:
                            await self._collect(http, courier)
                except httpx.HTTPError as exc:
                    self.counts["http_errors"] += 1
                    log.warning("API call failed: %s", exc)

    async def _deposit(self, http: httpx.AsyncClient, courier: str, lockers: list[str]) -> None:
        locker_id = self._rng.choice(lockers)
        size = self._rng.choices([s for s, _ in SIZES], [w for _, w in SIZES])[0]
        phone = self._phone()
        self.villagers.destinations[phone] = locker_id
        carrier = courier.removeprefix("courier-").upper()
        response = await http.post("/api/v1/deposits", headers=self._token(courier), json={
            "tracking_number": f"{carrier}{self.seed:02d}{self._serial:08d}",
            "locker_id": locker_id, "size": size, "recipient_phone": phone,
            "consent_method": "sms_reply",
        })  # fmt: skip
        self.counts[f"deposit_{response.status_code}"] += 1
        if response.status_code == 201:
            self.created.add(response.json()["parcel"]["tracking_number"])
        if response.status_code >= 400:
            self.counts[response.json()["error"]["code"]] += 1

    async def _book_produce(self, http: httpx.AsyncClient, agent: str, lockers: list[str]) -> None:
        occupancy = await http.get("/api/v1/agent/occupancy", headers=self._token(agent))
        mine = [row["locker_id"] for row in occupancy.json() if row["online"]] or lockers[:1]
        locker_id = self._rng.choice(mine)
        cherries = self._rng.random() < 0.4
        phone = self._phone()
        self.villagers.destinations[phone] = locker_id
        response = await http.post("/api/v1/agent/outbound", headers=self._token(agent), json={
            "carrier_code": self._rng.choice(["ems", "sf"]), "sender_phone": phone,
            "locker_id": locker_id, "size": "M" if cherries else "L",
            "temperature": "chilled" if cherries else "ambient",
        })  # fmt: skip
        self.counts[f"produce_{response.status_code}"] += 1
        if response.status_code == 201:
            self.created.add(response.json()["tracking_number"])

    async def _collect(self, http: httpx.AsyncClient, courier: str) -> None:
        for state in ("dropped_off", "expired"):
            listed = await http.get(
                "/api/v1/parcels",
                headers=self._token(courier),
                params={"state": state, "limit": 20},
            )
            for parcel in listed.json():
                if parcel.get("open_purpose"):
                    continue  # a collection is already under way
                done = await http.post(
                    f"/api/v1/parcels/{parcel['id']}/collect", headers=self._token(courier)
                )
                self.counts[f"collect_{state}_{done.status_code}"] += 1
