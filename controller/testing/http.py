"""Serving the API over real HTTP on a free loopback port, inside the caller's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn

from controller.api.app import create_app
from controller.embedded_broker import free_port
from controller.runtime import Runtime


@contextlib.asynccontextmanager
async def serve_http(runtime: Runtime, *, start: bool = False) -> AsyncIterator[str]:
    """Serve ``runtime``'s API; yield the base URL (``http://127.0.0.1:PORT``).

    With ``start`` the runtime's bridge and background work run too.
    """
    port = free_port()
    config = uvicorn.Config(
        create_app(runtime=runtime, start=start),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
