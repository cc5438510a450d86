"""The FastAPI application: ``/api/v1`` routes, ``/healthz``, ``/readyz``, OpenAPI at ``/docs``.

:func:`create_app` builds nothing at import time. Given a :class:`Runtime` it serves that one
(tests, the demo); otherwise it builds one from settings in its lifespan, checks that the
database schema is at the newest migration (it never creates or changes the schema itself:
``lockerfleet db upgrade`` does), and starts the MQTT bridge and background work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from controller.api import errors
from controller.api.routers import (
    admin,
    agents,
    alarms,
    commands,
    configs,
    credentials,
    fleet,
    health,
    lockers,
    metrics,
    parcels,
    provisioning,
)
from controller.db.migrate import current_revision, head_revision
from controller.runtime import Runtime, build_runtime
from controller.settings import Settings


class SchemaNotReady(RuntimeError):
    """The database is not at the newest migration."""


async def check_schema(runtime: Runtime) -> None:
    """Raise :class:`SchemaNotReady` unless the schema is at the newest migration."""
    current, head = await current_revision(runtime.db), head_revision()
    if current != head:
        raise SchemaNotReady(
            f"the database schema is at {current or 'nothing'}, this controller needs {head}: "
            "run `lockerfleet db upgrade` first"
        )


def create_app(
    settings: Settings | None = None, *, runtime: Runtime | None = None, start: bool = True
) -> FastAPI:
    """Return the app. ``start=False`` serves requests without starting the bridge (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        rt = runtime or build_runtime(settings or Settings())
        app.state.runtime = rt
        if owned:
            await check_schema(rt)
        if start:
            await rt.start()
        try:
            yield
        finally:
            if owned:
                await rt.stop()

    app = FastAPI(
        title="lockerfleet",
        version="1",
        summary="Controller for fleets of smart parcel lockers in townships and villages",
        lifespan=lifespan,
    )
    if runtime is not None:
        app.state.runtime = runtime
    errors.install(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    for module in (parcels, lockers, agents, admin, commands, alarms, provisioning):
        app.include_router(module.router, prefix="/api/v1")
    for module in (configs, fleet, credentials):
        app.include_router(module.router, prefix="/api/v1")
    return app
