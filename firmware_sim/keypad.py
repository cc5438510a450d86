"""The keypad's brute-force guard and the short text on the locker's screen.

Wrong codes are counted. Every ``keypad_max_attempts`` consecutive wrong codes lock the keypad,
first for ``keypad_lockout_s``, then twice as long each further time (60 s, 120 s, 240 s, ...,
at most an hour, as protocol §11.5 recommends). A right code, or an hour without a wrong one,
forgets the count. While locked out the keypad ignores what is typed and the screen says how
long to wait. The counters are volatile: a reboot resets them (as on most real boards).

The screen shows a message for :data:`MESSAGE_MS`, then the idle prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

IDLE_TEXT = "请输入取件码 Enter pickup code"
MESSAGE_MS = 20_000
FORGET_AFTER_MS = 3_600_000
MAX_LOCKOUT_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class WrongCode:
    """What one wrong code did: consecutive count, and the lockout it started (0 if none)."""

    attempts: int
    locked_out_ms: int
    tries_left: int


@dataclass(slots=True)
class KeypadGuard:
    attempts: int = 0
    lockouts: int = 0
    locked_until: int = 0
    last_wrong_at: int = 0

    def locked_out_for(self, now_ms: int) -> int:
        """Return how many milliseconds the keypad stays locked (0: it takes codes)."""
        return max(0, self.locked_until - now_ms)

    def wrong(self, now_ms: int, max_attempts: int, lockout_s: int) -> WrongCode:
        """Count a wrong code and return what it did."""
        if self.attempts and now_ms - self.last_wrong_at > FORGET_AFTER_MS:
            self.attempts = self.lockouts = 0
        self.attempts += 1
        self.last_wrong_at = now_ms
        locked_out = 0
        if self.attempts % max_attempts == 0:
            locked_out = min(MAX_LOCKOUT_MS, lockout_s * 1000 * 2**self.lockouts)
            self.lockouts += 1
            self.locked_until = now_ms + locked_out
        return WrongCode(self.attempts, locked_out, max_attempts - self.attempts % max_attempts)

    def right(self) -> None:
        """Forget the wrong codes after a code matched."""
        self.attempts = self.lockouts = 0
        self.locked_until = 0


@dataclass(slots=True)
class Screen:
    """The short text on the locker's display."""

    text: str = IDLE_TEXT
    until: int = 0

    def show(self, text: str, now_ms: int, for_ms: int = MESSAGE_MS) -> None:
        self.text = text
        self.until = now_ms + for_ms

    def current(self, now_ms: int) -> str:
        """Return what the screen shows at ``now_ms``."""
        return self.text if now_ms < self.until else IDLE_TEXT
