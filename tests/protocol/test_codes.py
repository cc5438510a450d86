"""Pickup codes: the keyed hash, the versioned cache (delta, paged full sync, resume), pages."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.auth import sign_command
from protocol.codec import MAX_PAYLOAD_BYTES, encode
from protocol.codes import (
    CodeCache,
    code_hash,
    delta_sync,
    full_sync_pages,
    is_well_formed_code,
)
from protocol.fields import MAX_SAFE_INT
from protocol.messages import (
    MAX_CODES_PER_PAGE,
    CodeEntry,
    CodeStaging,
    Command,
    Outcome,
    RefusalReason,
    SyncCodes,
    SyncMode,
)
from tests.protocol.protocol_strategies import FAST

KEY = bytes(range(32, 64))
LOCKER = "L-1"
NOW = 1_777_622_400_000
DAY = 24 * 3_600_000


def entry(code: str, compartment: str = "A01", expires_at: int = NOW + DAY) -> CodeEntry:
    return CodeEntry(code_hash(KEY, LOCKER, code), compartment, f"P-{code}", expires_at)


A, B, C, D = (entry(c, f"A0{i}") for i, c in enumerate(("111111", "222222", "333333", "444444")))


def full(*entries: CodeEntry, to_version: int = 5) -> list[SyncCodes]:
    return full_sync_pages(entries, to_version, page_size=1)


# ---------------------------------------------------------------------------------------------
# The hash
# ---------------------------------------------------------------------------------------------


def test_code_hash_is_keyed_per_locker_and_per_code() -> None:
    h = code_hash(KEY, LOCKER, "428613")
    assert len(h) == 64
    assert h == h.lower()
    assert int(h, 16) >= 0
    assert code_hash(KEY, LOCKER, "428613") == h
    assert code_hash(KEY, "L-2", "428613") != h
    assert code_hash(KEY, LOCKER, "428614") != h
    assert code_hash(bytes(32), LOCKER, "428613") != h


@pytest.mark.parametrize(
    ("code", "ok"),
    [
        ("000000", True),
        ("428613", True),
        ("42861", False),
        ("4286130", False),
        ("42861a", False),
        ("４２８６１３", False),
        ("", False),
    ],
)
def test_well_formed_codes_are_six_ascii_digits(code: str, ok: bool) -> None:
    assert is_well_formed_code(code) is ok


# ---------------------------------------------------------------------------------------------
# Delta
# ---------------------------------------------------------------------------------------------


def test_delta_applies_adds_and_removes_together() -> None:
    cache = CodeCache(version=3, entries={A.hash: A, B.hash: B})
    verdict = cache.apply(delta_sync(3, 4, add=[C], remove=[A.hash, "f" * 64]))
    assert (verdict.outcome, verdict.reason, verdict.cache_version) == (Outcome.APPLIED, None, 4)
    assert set(cache.entries) == {B.hash, C.hash}
    assert cache.version == 4


def test_delta_from_another_version_is_refused_and_changes_nothing() -> None:
    cache = CodeCache(version=3, entries={A.hash: A})
    verdict = cache.apply(delta_sync(2, 4, add=[C], remove=[A.hash]))
    assert verdict.outcome is None
    assert verdict.reason is RefusalReason.CACHE_VERSION_MISMATCH
    assert verdict.cache_version == 3
    assert (cache.version, set(cache.entries)) == (3, {A.hash})


def test_a_delta_must_move_forward() -> None:
    with pytest.raises(ValueError, match="to_version"):
        delta_sync(4, 4, add=[], remove=[])
    with pytest.raises(ValueError, match="from_version"):
        SyncCodes(SyncMode.DELTA, 4)
    with pytest.raises(ValueError, match="remove"):
        SyncCodes(SyncMode.FULL, 4, remove=(A.hash,))
    with pytest.raises(ValueError, match="page"):
        SyncCodes(SyncMode.FULL, 4, page=3, pages=2)


# ---------------------------------------------------------------------------------------------
# Full sync in pages
# ---------------------------------------------------------------------------------------------


def test_a_single_page_full_sync_replaces_the_cache() -> None:
    cache = CodeCache(version=3, entries={A.hash: A})
    (page,) = full_sync_pages([B, C], 9)
    verdict = cache.apply(page)
    assert (verdict.outcome, verdict.cache_version) == (Outcome.APPLIED, 9)
    assert set(cache.entries) == {B.hash, C.hash}
    assert cache.staging() is None


def test_an_empty_full_sync_empties_the_cache() -> None:
    cache = CodeCache(version=3, entries={A.hash: A})
    (page,) = full_sync_pages([], 4)
    assert cache.apply(page).outcome is Outcome.APPLIED
    assert cache.entries == {}


def test_pages_in_any_order_apply_in_one_step_when_the_last_arrives() -> None:
    cache = CodeCache(version=3, entries={A.hash: A})
    p1, p2, p3 = full(B, C, D)
    verdict = cache.apply(p3)
    assert (verdict.outcome, verdict.missing_pages, verdict.cache_version) == (
        Outcome.PAGES_PENDING,
        (1, 2),
        3,
    )
    verdict = cache.apply(p1)
    assert verdict.missing_pages == (2,)
    assert set(cache.entries) == {A.hash}  # the old cache stays in force until the end
    assert cache.match(A.hash, NOW) == A
    verdict = cache.apply(p2)
    assert (verdict.outcome, verdict.missing_pages, verdict.cache_version) == (
        Outcome.APPLIED,
        (),
        5,
    )
    assert set(cache.entries) == {B.hash, C.hash, D.hash}
    assert cache.staging() is None


def test_a_duplicate_page_while_staging_changes_nothing() -> None:
    cache = CodeCache()
    p1, _, p3 = full(B, C, D)
    cache.apply(p1)
    assert cache.apply(p1).missing_pages == (2, 3)
    assert cache.apply(p3).missing_pages == (2,)


def test_a_partial_sync_is_resumed_from_the_staging_the_birth_reports() -> None:
    cache = CodeCache(version=3)
    pages = full(A, B, C, D, to_version=8)
    cache.apply(pages[0])
    cache.apply(pages[2])
    staging = cache.staging()
    assert staging == CodeStaging(8, 4, (1, 3))
    # the link drops; the controller reads the birth and sends only what is missing
    missing = [p for p in pages if p.page not in staging.have]
    assert [p.page for p in missing] == [2, 4]
    for page in missing:
        verdict = cache.apply(page)
    assert (verdict.outcome, cache.version) == (Outcome.APPLIED, 8)
    assert set(cache.entries) == {A.hash, B.hash, C.hash, D.hash}


def test_a_page_of_another_sync_discards_the_staging() -> None:
    cache = CodeCache(version=3)
    old = full(A, B, C, to_version=6)
    new = full(C, D, to_version=7)
    cache.apply(old[0])
    verdict = cache.apply(new[1])
    assert verdict.missing_pages == (1,)
    assert cache.staging() == CodeStaging(7, 2, (2,))
    cache.apply(new[0])
    assert (cache.version, set(cache.entries)) == (7, {C.hash, D.hash})


def test_a_late_page_of_the_version_in_force_changes_nothing() -> None:
    cache = CodeCache(version=3)
    pages = full(A, B, to_version=6)
    for page in pages:
        cache.apply(page)
    cache.consume(A.hash)
    staged = full(C, D, to_version=7)
    cache.apply(staged[0])
    verdict = cache.apply(pages[0])  # a copy of a page of version 6 arrives late
    assert (verdict.outcome, verdict.reason, verdict.cache_version) == (Outcome.APPLIED, None, 6)
    assert set(cache.entries) == {B.hash}  # the used code stays used
    assert cache.staging() == CodeStaging(7, 2, (1,))  # and the sync to 7 goes on


def test_a_page_of_an_older_version_is_refused() -> None:
    cache = CodeCache(version=9, entries={B.hash: B})
    (old,) = full_sync_pages([A], 4)
    verdict = cache.apply(old)
    assert (verdict.outcome, verdict.reason, verdict.cache_version) == (
        None,
        RefusalReason.CACHE_VERSION_MISMATCH,
        9,
    )
    assert set(cache.entries) == {B.hash}


@given(st.permutations(range(6)), st.integers(min_value=1, max_value=4))
@FAST
def test_pages_in_every_order_give_the_same_cache(order: list[int], page_size: int) -> None:
    entries = [entry(f"{n:06d}", f"A{n:02d}") for n in range(6)]
    pages = full_sync_pages(entries, 2, page_size=page_size)
    cache = CodeCache(version=1)
    shuffled = [pages[i] for i in order if i < len(pages)]
    for i, page in enumerate(shuffled):
        verdict = cache.apply(page)
        last = i == len(shuffled) - 1
        assert verdict.outcome is (Outcome.APPLIED if last else Outcome.PAGES_PENDING)
    assert cache.version == 2
    assert set(cache.entries) == {e.hash for e in entries}


# ---------------------------------------------------------------------------------------------
# Matching, consuming, expiry
# ---------------------------------------------------------------------------------------------


def test_match_consume_and_expiry() -> None:
    soon = entry("555555", expires_at=NOW + 1000)
    cache = CodeCache(version=1, entries={A.hash: A, soon.hash: soon})
    assert cache.match(code_hash(KEY, LOCKER, "111111"), NOW) == A
    assert cache.match(code_hash(KEY, LOCKER, "999999"), NOW) is None
    assert cache.match(soon.hash, NOW + 1000) == soon  # valid up to and including expires_at
    assert cache.match(soon.hash, NOW + 1001) is None
    cache.consume(A.hash)
    cache.consume(A.hash)  # consuming twice is harmless
    assert cache.match(A.hash, NOW) is None
    assert cache.purge_expired(NOW + 1001) == 1
    assert cache.entries == {}


# ---------------------------------------------------------------------------------------------
# Building pages
# ---------------------------------------------------------------------------------------------


def test_full_sync_pages_split_by_count() -> None:
    entries = [entry(f"{n:06d}") for n in range(250)]
    pages = full_sync_pages(entries, 3)
    assert [len(p.add) for p in pages] == [100, 100, 50]
    assert [(p.page, p.pages, p.to_version, p.mode) for p in pages] == [
        (n, 3, 3, SyncMode.FULL) for n in (1, 2, 3)
    ]
    assert [e for p in pages for e in p.add] == entries
    with pytest.raises(ValueError, match="page_size"):
        full_sync_pages(entries, 3, page_size=MAX_CODES_PER_PAGE + 1)
    with pytest.raises(ValueError, match="page_size"):
        full_sync_pages(entries, 3, page_size=0)


def test_full_sync_pages_fit_in_one_message_even_with_the_longest_fields() -> None:
    longest = [
        CodeEntry(code_hash(KEY, LOCKER, f"{n:06d}"), "ABCDEFGH", "x" * 40, MAX_SAFE_INT)
        for n in range(250)
    ]
    pages = full_sync_pages(longest, MAX_SAFE_INT)
    assert all(len(p.add) < MAX_CODES_PER_PAGE for p in pages)
    assert [e for p in pages for e in p.add] == longest
    for page in pages:
        command = Command.of("L" * 64, "c" * 64, MAX_SAFE_INT, MAX_SAFE_INT - 1, MAX_SAFE_INT, page)
        assert len(encode(sign_command(command, KEY))) <= MAX_PAYLOAD_BYTES


@given(st.lists(st.integers(min_value=0, max_value=999_999), unique=True, max_size=300))
@FAST
def test_full_sync_pages_keep_every_entry_in_order(codes: list[int]) -> None:
    rng = random.Random(len(codes))
    entries = [entry(f"{c:06d}", "A01", NOW + rng.randrange(DAY)) for c in codes]
    pages = full_sync_pages(entries, 7)
    assert [e for p in pages for e in p.add] == entries
    assert {p.pages for p in pages} == {len(pages)}
    assert [p.page for p in pages] == list(range(1, len(pages) + 1))
