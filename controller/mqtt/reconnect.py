"""Staying connected to the broker: aiomqtt does not reconnect by itself."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

import aiomqtt

log = logging.getLogger("lockerfleet.mqtt")

MAX_BACKOFF_S = 4.0
"""A controller replica is one client, not thousands: it retries a lost broker every few
seconds, so that it is subscribed again about as soon as the lockers (0.5-4 s backoff) are
back. Whatever a locker publishes before that reaches no subscriber and waits for its
retransmission timeout (30 s); a 30 s cap made that most of a reconnect storm's time."""


async def stay_connected(
    session: Callable[[], Awaitable[None]], what: str, after: Callable[[], None]
) -> None:
    """Run ``session`` again whenever the connection is lost, until cancelled.

    The wait between attempts is jittered and doubles from 0.5 s to ``MAX_BACKOFF_S``; a
    session that lasted over 30 s starts the backoff afresh. ``after`` runs when each session
    ends. A lost connection may surface bare or from the session's task group: both are caught.
    """
    delay = 0.5
    while True:
        started = time.monotonic()
        try:
            await session()
        except* aiomqtt.MqttError as lost:
            log.warning("%s: %s", what, lost.exceptions[0])
        finally:
            after()
        if time.monotonic() - started > 30:
            delay = 0.5
        await asyncio.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, MAX_BACKOFF_S)
