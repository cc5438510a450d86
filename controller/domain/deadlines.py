"""Storage windows: how long a parcel waits in a locker, and outage credit.

A parcel may be picked up until ``deposited_at + window``. When its locker is offline for a
while, recipients could not be told about problems and couriers could not act, so the deadline
moves by the part of the outage that fell inside the parcel's storage window. Parcels at a
locker that is offline right now never expire until it is back (the credit is added then).
"""

from __future__ import annotations

from datetime import datetime, timedelta


def initial_deadline(deposited_at: datetime, window: timedelta) -> datetime:
    return deposited_at + window


def outage_credit(
    deposited_at: datetime, deadline: datetime, offline_from: datetime, offline_to: datetime
) -> timedelta:
    """Return how much of the outage ``[offline_from, offline_to)`` lay within
    ``[deposited_at, deadline)``; zero if none."""
    start = max(deposited_at, offline_from)
    end = min(deadline, offline_to)
    return max(end - start, timedelta(0))
