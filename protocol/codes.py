"""Pickup codes on the locker: keyed hashes, and the versioned cache that holds them.

A pickup code is six decimal digits. The locker never holds codes in clear: it holds
``code_hash(code_key, locker_id, code)``, an HMAC-SHA256 under a per-locker *code key* (separate
from the command key), and hashes whatever is typed on the keypad the same way. So pickups work
while the locker is offline, and a dumped cache gives away no code without the key.

The cache has an integer ``version`` set by the controller. Two ways to change it:

* **delta** (one page): ``from_version`` must equal the cache's version, else the locker refuses
  with ``cache_version_mismatch`` and reports its version, and the controller falls back to a
  full sync. Adds and removes apply together and the version becomes ``to_version``.
* **full** (``pages`` pages of at most 100 entries): pages are staged for ``to_version`` in any
  order; when all are there, the staged set replaces the cache in one step. A page for another
  ``to_version`` discards the staging and starts over. After each page the locker reports the
  pages still missing, and its birth carries the staging, so after a lost link the controller
  resends only the missing pages: a partial sync is resumed, not restarted.

Versions only go up. A full-sync page for the version the cache already has is a late copy and
changes nothing (``applied``); one for an older version is refused with
``cache_version_mismatch``, so a delayed page can never roll the cache back and revive codes
that were used or withdrawn since.

Entries whose ``expires_at`` has passed (by the locker's clock) no longer match, and an entry is
removed as soon as its code is used, online or offline.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from protocol.codec import MAX_PAYLOAD_BYTES
from protocol.fields import to_wire
from protocol.messages import (
    MAX_CODES_PER_PAGE,
    CodeEntry,
    CodeStaging,
    Outcome,
    RefusalReason,
    SyncCodes,
    SyncMode,
)

CODE_DOMAIN = b"lockerfleet/v1/code\n"
CODE_DIGITS = 6
MAX_PAGE_ENTRY_BYTES = MAX_PAYLOAD_BYTES - 1024
"""Most bytes the entries of one sync page may take as JSON; the other 1 KiB is room for the
command around them (its longest possible envelope and arguments take under 600 bytes)."""
_CODE = re.compile(r"[0-9]{6}")


def is_well_formed_code(code: str) -> bool:
    """Return whether ``code`` is six ASCII digits."""
    return bool(_CODE.fullmatch(code))


def code_hash(code_key: bytes, locker_id: str, code: str) -> str:
    """Return the keyed hash of ``code`` for ``locker_id``: 64 lowercase hex digits.

    HMAC-SHA256(code_key, "lockerfleet/v1/code\\n" + locker_id + "\\n" + code), all ASCII.
    """
    message = CODE_DOMAIN + locker_id.encode("ascii") + b"\n" + code.encode("ascii")
    return hmac.new(code_key, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class SyncVerdict:
    """What applying one sync page did: an outcome, or a refusal with the cache's version."""

    outcome: Outcome | None
    reason: RefusalReason | None
    cache_version: int
    missing_pages: tuple[int, ...] = ()


@dataclass
class CodeCache:
    """The locker's pickup-code cache. Plain data, so firmware can persist it as is."""

    version: int = 0
    entries: dict[str, CodeEntry] = field(default_factory=dict)
    staging_version: int | None = None
    staging_pages: int = 0
    staged: dict[int, tuple[CodeEntry, ...]] = field(default_factory=dict)

    def match(self, hashed: str, now_ms: int) -> CodeEntry | None:
        """Return the live entry for a hashed code, or ``None`` (unknown or expired)."""
        entry = self.entries.get(hashed)
        if entry is None or entry.expires_at < now_ms:
            return None
        return entry

    def consume(self, hashed: str) -> None:
        """Forget a code once it has been used."""
        self.entries.pop(hashed, None)

    def purge_expired(self, now_ms: int) -> int:
        """Forget every entry whose ``expires_at`` has passed; return how many were dropped."""
        expired = [h for h, e in self.entries.items() if e.expires_at < now_ms]
        for hashed in expired:
            del self.entries[hashed]
        return len(expired)

    def staging(self) -> CodeStaging | None:
        """Return the partly received full sync, for the birth message."""
        if self.staging_version is None:
            return None
        return CodeStaging(self.staging_version, self.staging_pages, tuple(sorted(self.staged)))

    def apply(self, sync: SyncCodes) -> SyncVerdict:
        """Apply one sync page and return what it did."""
        if sync.mode is SyncMode.DELTA:
            return self._apply_delta(sync)
        return self._apply_full_page(sync)

    def _apply_delta(self, sync: SyncCodes) -> SyncVerdict:
        if sync.from_version != self.version:
            return SyncVerdict(None, RefusalReason.CACHE_VERSION_MISMATCH, self.version)
        for hashed in sync.remove:
            self.entries.pop(hashed, None)
        for entry in sync.add:
            self.entries[entry.hash] = entry
        self.version = sync.to_version
        return SyncVerdict(Outcome.APPLIED, None, self.version)

    def _apply_full_page(self, sync: SyncCodes) -> SyncVerdict:
        if sync.to_version < self.version:
            return SyncVerdict(None, RefusalReason.CACHE_VERSION_MISMATCH, self.version)
        if sync.to_version == self.version:
            return SyncVerdict(Outcome.APPLIED, None, self.version)  # a late duplicate page
        if self.staging_version != sync.to_version or self.staging_pages != sync.pages:
            self.staging_version, self.staging_pages, self.staged = sync.to_version, sync.pages, {}
        self.staged[sync.page] = sync.add
        missing = tuple(p for p in range(1, sync.pages + 1) if p not in self.staged)
        if missing:
            return SyncVerdict(Outcome.PAGES_PENDING, None, self.version, missing)
        self.entries = {e.hash: e for page in self.staged.values() for e in page}
        self.version, self.staging_version, self.staging_pages, self.staged = (
            sync.to_version,
            None,
            0,
            {},
        )
        return SyncVerdict(Outcome.APPLIED, None, self.version)


def entry_bytes(entry: CodeEntry) -> int:
    """Return how many bytes ``entry`` takes in a page's ``add`` array (its comma included)."""
    text = json.dumps(to_wire(entry), ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8")) + 1


def full_sync_pages(
    entries: Sequence[CodeEntry], to_version: int, page_size: int = MAX_CODES_PER_PAGE
) -> list[SyncCodes]:
    """Return the pages of a full sync of ``entries`` to ``to_version`` (at least one page).

    A page holds at most ``page_size`` entries and at most :data:`MAX_PAGE_ENTRY_BYTES` of
    them, so every page's command fits in one message. Raises :class:`ValueError` for a
    ``page_size`` outside 1..100.
    """
    if not 1 <= page_size <= MAX_CODES_PER_PAGE:
        raise ValueError(f"page_size must be 1..{MAX_CODES_PER_PAGE}")
    chunks: list[tuple[CodeEntry, ...]] = []
    chunk: list[CodeEntry] = []
    used = 0
    for entry in entries:
        size = entry_bytes(entry)
        if chunk and (len(chunk) == page_size or used + size > MAX_PAGE_ENTRY_BYTES):
            chunks.append(tuple(chunk))
            chunk, used = [], 0
        chunk.append(entry)
        used += size
    if chunk or not chunks:
        chunks.append(tuple(chunk))
    return [
        SyncCodes(SyncMode.FULL, to_version, page=n, pages=len(chunks), add=chunk)
        for n, chunk in enumerate(chunks, start=1)
    ]


def delta_sync(
    from_version: int, to_version: int, add: Iterable[CodeEntry], remove: Iterable[str]
) -> SyncCodes:
    """Return a one-page delta sync."""
    return SyncCodes(
        SyncMode.DELTA, to_version, from_version=from_version, add=tuple(add), remove=tuple(remove)
    )
