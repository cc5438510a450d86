"""Serving the API with uvicorn inside an already running event loop (demo, scenarios, tests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn

from controller.api.app import create_app
from controller.embedded_broker import free_port
from controller.runtime import Runtime


class PortInUse(OSError):
    """The HTTP port is taken."""


@contextlib.asynccontextmanager
async def serve_http(
    runtime: Runtime, *, host: str = "127.0.0.1", port: int | None = None, start: bool = False
) -> AsyncIterator[str]:
    """Serve ``runtime``'s API; yield its base URL. ``port`` None picks a free one.

    With ``start`` the runtime's bridge and background work run too. Raises :class:`PortInUse`.
    """
    chosen = port or free_port()
    config = uvicorn.Config(
        create_app(runtime=runtime, start=start),
        host=host,
        port=chosen,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    # The embedding program owns the signals (the demo stops everything on Ctrl-C).
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            raise PortInUse(f"could not listen on {host}:{chosen} (is the port in use?)")
        await asyncio.sleep(0.01)
    try:
        yield f"http://{host}:{chosen}"
    finally:
        server.should_exit = True
        await task
