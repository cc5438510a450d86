"""Sequence numbers: ranges for acknowledgements, and a receiver's duplicate and gap tracking.

Within one boot a locker numbers its births, events and results 1, 2, 3, ... A receiver:

* drops a message whose ``(locker_id, boot_id, seq)`` it has stored already (a duplicate: QoS 1
  redelivery, or a replay from the locker's buffer);
* stores messages in whatever order they arrive and orders them by ``seq`` (two controller
  replicas sharing a subscription can see one locker's messages out of order);
* treats a number that stays missing as a *gap*. Gaps normally close by themselves because the
  locker resends everything not acknowledged; if one persists longer than the retransmission
  interval, or the locker reports ``events_dropped``, the receiver asks for a rebirth (full
  state) and stops waiting for the lost numbers;
* takes a message with a higher ``boot_id`` as a new stream starting at 1, and a message with a
  lower ``boot_id`` than the newest it knows as history: stored, but never applied over newer
  state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from protocol.messages import SeqRange


def to_ranges(seqs: Iterable[int]) -> tuple[SeqRange, ...]:
    """Return sorted, merged inclusive ranges covering ``seqs``."""
    out: list[SeqRange] = []
    for seq in sorted(set(seqs)):
        if out and out[-1].last + 1 == seq:
            out[-1] = SeqRange(out[-1].first, seq)
        else:
            out.append(SeqRange(seq, seq))
    return tuple(out)


def in_ranges(seq: int, ranges: Iterable[SeqRange]) -> bool:
    """Return whether ``seq`` lies in any of ``ranges``."""
    return any(r.first <= seq <= r.last for r in ranges)


@dataclass
class StreamTracker:
    """Duplicates and gaps of one locker's stream, across boots.

    ``contiguous`` is the highest number up to which everything of the current boot was seen;
    ``ahead`` holds what was seen beyond it.
    """

    boot_id: int = 0
    contiguous: int = 0
    ahead: set[int] = field(default_factory=set)
    duplicates: int = 0
    stale: int = 0

    def observe(self, boot_id: int, seq: int) -> bool:
        """Record a sequenced message; return True if it is new, False for a duplicate or a
        message of an older boot."""
        if boot_id < self.boot_id:
            self.stale += 1
            return False
        if boot_id > self.boot_id:
            self.boot_id, self.contiguous, self.ahead = boot_id, 0, set()
        if seq <= self.contiguous or seq in self.ahead:
            self.duplicates += 1
            return False
        self.ahead.add(seq)
        while self.contiguous + 1 in self.ahead:
            self.contiguous += 1
            self.ahead.discard(self.contiguous)
        return True

    def missing(self, up_to: int | None = None) -> tuple[SeqRange, ...]:
        """Return the numbers not yet seen below the highest seen (or up to ``up_to``)."""
        top = max(self.ahead, default=self.contiguous)
        if up_to is not None:
            top = max(top, up_to)
        return to_ranges(s for s in range(self.contiguous + 1, top + 1) if s not in self.ahead)

    def skip_to(self, seq: int) -> None:
        """Give up on everything up to ``seq`` (after a rebirth replaced the lost state)."""
        self.contiguous = max(self.contiguous, seq)
        self.ahead = {s for s in self.ahead if s > self.contiguous}
        while self.contiguous + 1 in self.ahead:
            self.contiguous += 1
            self.ahead.discard(self.contiguous)
