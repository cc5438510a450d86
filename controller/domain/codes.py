"""Pickup codes: six digits from the operating system's CSPRNG.

Codes that people guess first (all one digit, runs such as 123456) are never issued. A code is
unique among the *active* codes of its locker; the database enforces it and the service draws
again on a collision.
"""

from __future__ import annotations

import secrets

_GUESSABLE = frozenset(
    {str(d) * 6 for d in range(10)}
    | {"123456", "654321", "012345", "543210", "234567", "345678", "456789", "987654"}
)


def new_code() -> str:
    """Return a fresh six-digit code."""
    while True:
        code = f"{secrets.randbelow(1_000_000):06d}"
        if code not in _GUESSABLE:
            return code


def masked(code: str) -> str:
    """Return the code with all but the last two digits hidden (for logs and redaction)."""
    return "*" * (len(code) - 2) + code[-2:]
