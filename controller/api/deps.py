"""Dependencies of the routes: the runtime, and the authenticated actor."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from controller.runtime import Runtime, Services
from controller.services.context import Actor

bearer = HTTPBearer(auto_error=False, description="An API token (lf_...) issued by an admin")


# Dependencies are coroutines even when they need not be: FastAPI runs a plain function
# dependency in a worker thread, two thread hops per request for nothing.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_services(runtime: Annotated[Runtime, Depends(get_runtime)]) -> Services:
    return runtime.services


async def current_actor(
    runtime: Annotated[Runtime, Depends(get_runtime)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Actor:
    """The caller, from its bearer token. 401 if missing, unknown, revoked or expired."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(401, "send an API token: Authorization: Bearer lf_...", challenge)
    actor = await runtime.services.admin.authenticate(credentials.credentials)
    if actor is None:
        raise HTTPException(401, "the token is unknown, revoked or expired", challenge)
    return actor


CurrentActor = Annotated[Actor, Depends(current_actor)]
ServicesDep = Annotated[Services, Depends(get_services)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
