"""The demo's MQTT broker: the user's, a Mosquitto child process, or amqtt in-process.

* ``--broker URL``: use that broker (nothing is started or stopped).
* otherwise, when the ``mosquitto`` binary is on PATH: a child process on a free loopback port
  with a generated configuration (stopped with the demo; no process is left behind);
* otherwise amqtt (>= 0.11.4) inside this process, as a fallback that works but has known
  defects (see ``docs/demo.md``): clients authenticate with their own credentials (anonymous
  access breaks its persistent sessions), lockers connect one at a time, and the demo paces its
  traffic well below what amqtt can forward.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Literal

from controller.embedded_broker import (
    BrokerUnavailable,
    MosquittoProcess,
    find_mosquitto,
    free_port,
)
from protocol.urls import BrokerAddress, parse_broker_url

log = logging.getLogger("lockerfleet.demo")

BrokerKind = Literal["external", "mosquitto", "amqtt"]


@dataclass
class RunningBroker:
    kind: BrokerKind
    address: BrokerAddress
    _mosquitto: MosquittoProcess | None = None
    _amqtt: Any = None

    @property
    def fragile(self) -> bool:
        """True for amqtt: connect lockers one by one and pace the traffic."""
        return self.kind == "amqtt"

    async def stop(self) -> None:
        if self._mosquitto is not None:
            self._mosquitto.close()
            self._mosquitto = None
        if self._amqtt is not None:
            with contextlib.suppress(Exception):
                await self._amqtt.shutdown()
            self._amqtt = None


async def start_broker(
    url: str | None,
    *,
    credentials: dict[str, str],
    prefer: BrokerKind | None = None,
) -> RunningBroker:
    """Return a running broker (see the module docstring for the order of choice).

    ``credentials`` (username → password) are what the in-process amqtt admits.
    Raises :class:`BrokerUnavailable` if nothing can be started.
    """
    if url:
        return RunningBroker("external", parse_broker_url(url))
    if prefer != "amqtt" and find_mosquitto() is not None:
        process = MosquittoProcess(extra_config="max_connections -1\n")
        await asyncio.to_thread(process.start)
        return RunningBroker("mosquitto", process.address, _mosquitto=process)
    if prefer == "mosquitto":
        raise BrokerUnavailable("mosquitto is not installed")
    return await _start_amqtt(credentials)


async def _start_amqtt(credentials: dict[str, str]) -> RunningBroker:
    try:
        from amqtt.broker import Broker
    except ImportError as exc:  # pragma: no cover - amqtt is a dependency
        raise BrokerUnavailable(f"neither mosquitto nor amqtt is available: {exc}") from None
    port = free_port()
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {
            "controller.demo.amqtt_auth.CredentialsAuthPlugin": {"credentials": credentials},
        },
    }
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)
    broker = Broker(config)  # inside the running loop, as amqtt requires
    await broker.start()
    log.warning(
        "mosquitto is not installed: using the in-process amqtt broker, which is slower and has "
        "known defects (see docs/demo.md); install mosquitto for a faithful demo"
    )
    return RunningBroker("amqtt", BrokerAddress("127.0.0.1", port), _amqtt=broker)
