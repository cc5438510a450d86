"""Waiting for a distributed system to get somewhere, without timed assertions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def eventually(check: Callable[[], Any], within: float = 20.0, what: str = "") -> Any:
    """Poll ``check`` (plain or async) every 0.1 s until it returns something truthy; return
    that. Raises :class:`AssertionError` naming ``what`` if ``within`` seconds pass first."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {within:.0f} s waiting for {what or check}")
        await asyncio.sleep(0.1)
