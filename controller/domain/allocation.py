"""Which compartment a parcel goes into.

The smallest free compartment that fits, of the parcel's temperature class exactly (chilled
compartments are few and kept for produce and medicine), within the carrier's quota on that
locker if it has one. This module only *orders* the candidates; the database's partial unique
index on the holding parcel is what guarantees that two concurrent deposits, even on two
controller replicas, never get the same compartment: the service tries the candidates in this
order and moves to the next one when the insert loses the race.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from protocol.messages import SizeClass, TemperatureClass


@dataclass(frozen=True, slots=True)
class CompartmentView:
    """What allocation needs to know about one compartment."""

    id: int
    label: str
    size: SizeClass
    temperature: TemperatureClass
    usable: bool
    """In service, door closed, nothing sensed inside, and no parcel holding it."""


def fits(compartment: CompartmentView, size: SizeClass, temperature: TemperatureClass) -> bool:
    return compartment.size.rank >= size.rank and compartment.temperature is temperature


def candidates(
    compartments: Iterable[CompartmentView], size: SizeClass, temperature: TemperatureClass
) -> list[CompartmentView]:
    """Return the usable compartments that fit, smallest first, then by label."""
    usable = [c for c in compartments if c.usable and fits(c, size, temperature)]
    return sorted(usable, key=lambda c: (c.size.rank, c.label))


def quota_allows(held_by_carrier: int, quota: int | None) -> bool:
    """Return whether a carrier holding ``held_by_carrier`` compartments may take one more."""
    return quota is None or held_by_carrier < quota
