"""Wrong-code lockout with backoff, for keypads and API clients alike.

After ``max_attempts`` consecutive wrong codes the caller is locked out for ``base``; every
further wrong code doubles it, up to ``ceiling``. A right code resets the count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    max_attempts: int = 5
    base: timedelta = timedelta(seconds=60)
    ceiling: timedelta = timedelta(hours=1)

    def lockout_after(self, failures: int) -> timedelta | None:
        """Return how long to lock out after ``failures`` consecutive wrong codes, or None."""
        if failures < self.max_attempts:
            return None
        doublings = min(failures - self.max_attempts, 30)
        scaled: timedelta = self.base * (2**doublings)
        return min(scaled, self.ceiling)

    def attempts_left(self, failures: int) -> int:
        return max(self.max_attempts - failures, 0)
