"""Sequence numbers: ack ranges, and a receiver's tracking of duplicates, gaps and boots."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from protocol.messages import SeqRange
from protocol.sequence import StreamTracker, in_ranges, to_ranges
from tests.protocol.protocol_strategies import THOROUGH


def test_to_ranges_sorts_merges_and_dedupes() -> None:
    assert to_ranges([]) == ()
    assert to_ranges([5]) == (SeqRange(5, 5),)
    assert to_ranges([3, 1, 2, 2, 7, 9, 8, 11]) == (
        SeqRange(1, 3),
        SeqRange(7, 9),
        SeqRange(11, 11),
    )


@given(st.sets(st.integers(min_value=0, max_value=500)))
@THOROUGH
def test_to_ranges_covers_exactly_the_numbers(numbers: set[int]) -> None:
    ranges = to_ranges(numbers)
    covered = {n for r in ranges for n in range(r.first, r.last + 1)}
    assert covered == numbers
    assert all(a.last + 1 < b.first for a, b in itertools.pairwise(ranges))
    assert all(in_ranges(n, ranges) for n in numbers)
    assert not any(in_ranges(n, ranges) for n in range(502) if n not in numbers)


def test_new_messages_duplicates_and_gaps() -> None:
    tracker = StreamTracker()
    assert tracker.observe(1, 1)
    assert tracker.observe(1, 2)
    assert not tracker.observe(1, 2)
    assert tracker.observe(1, 5)
    assert tracker.missing() == (SeqRange(3, 4),)
    assert tracker.observe(1, 4)
    assert not tracker.observe(1, 4)
    assert tracker.missing() == (SeqRange(3, 3),)
    assert tracker.observe(1, 3)
    assert tracker.missing() == ()
    assert (tracker.contiguous, tracker.ahead, tracker.duplicates) == (5, set(), 2)


def test_the_high_water_mark_of_telemetry_reveals_a_gap() -> None:
    tracker = StreamTracker()
    tracker.observe(1, 1)
    assert tracker.missing() == ()
    assert tracker.missing(up_to=4) == (SeqRange(2, 4),)


def test_a_new_boot_starts_a_new_stream_and_an_old_one_is_stale() -> None:
    tracker = StreamTracker()
    for seq in (1, 2, 4):
        tracker.observe(3, seq)
    assert tracker.observe(4, 2)
    assert (tracker.boot_id, tracker.contiguous) == (4, 0)
    assert tracker.missing() == (SeqRange(1, 1),)
    assert not tracker.observe(3, 3)
    assert tracker.stale == 1
    assert tracker.boot_id == 4


def test_skip_to_gives_up_on_lost_numbers() -> None:
    tracker = StreamTracker()
    for seq in (1, 2, 6, 9):
        tracker.observe(1, seq)
    tracker.skip_to(5)  # a rebirth (or events_dropped) replaced 3..5
    assert tracker.contiguous == 6
    assert tracker.missing() == (SeqRange(7, 8),)
    assert not tracker.observe(1, 4)  # a late arrival of a skipped number is not new
    tracker.skip_to(2)  # never goes back
    assert tracker.contiguous == 6


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=120))
@THOROUGH
def test_every_number_is_new_exactly_once_in_any_order(arrivals: list[int]) -> None:
    tracker = StreamTracker()
    new = [seq for seq in arrivals if tracker.observe(7, seq)]
    assert sorted(new) == sorted(set(arrivals))
    assert tracker.duplicates == len(arrivals) - len(new)
    seen = set(arrivals)
    highest = max(seen, default=0)
    expected_missing = {s for s in range(1, highest + 1) if s not in seen}
    assert {s for r in tracker.missing() for s in range(r.first, r.last + 1)} == expected_missing
    contiguous = 0
    while contiguous + 1 in seen:
        contiguous += 1
    assert tracker.contiguous == contiguous
