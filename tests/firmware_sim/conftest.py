"""Fixtures of the simulator's tests: one locker on a manual clock, and a controller's signer."""

from __future__ import annotations

import dataclasses

import pytest

from firmware_sim.clock import ManualClock
from firmware_sim.locker import Locker
from firmware_sim.settings import Settings
from firmware_sim.simulation import Simulation
from firmware_sim.spec import LockerSpec, generated_spec
from firmware_sim.store import MemoryStore
from tests.firmware_sim.support import SEED, Signer

LOCKER_ID = "XZ-0001"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def spec() -> LockerSpec:
    """A 24-compartment locker, four of them chilled (C05-C08), with a four-hour battery."""
    return dataclasses.replace(
        generated_spec(LOCKER_ID, SEED, model="LF-24C"), battery_backup_s=4 * 3600
    )


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def locker(spec: LockerSpec, clock: ManualClock, store: MemoryStore) -> Locker:
    return Locker(spec, clock, store, settings=Settings(heartbeat_s=30))


@pytest.fixture
def sim(locker: Locker, clock: ManualClock) -> Simulation:
    return Simulation([locker], clock)


@pytest.fixture
def signer(clock: ManualClock) -> Signer:
    return Signer(SEED, now=clock.now_ms)
