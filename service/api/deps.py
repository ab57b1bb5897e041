"""What routes are handed: the settings, the job store, the caller's tenant.

Everything lives on `app.state`, built once by `create_app`; routes name what they need with the
`...Dep` annotations below and never reach for globals. Routers whose every route needs a key
use `KeyFirstRoute`, so the key is checked before anything else about the request. The
dependencies are `async def` that never block: FastAPI runs a plain `def` dependency on a worker
thread, a hop per dependency per request that costs more than the dependency itself. The one
database read left (a key not cached yet) goes to a thread explicitly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.cache import TtlCache
from service.errors import Unauthorized
from service.keys import key_digest, tenant_of
from service.settings import ServiceSettings
from service.store import JobStore


async def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


async def get_store(request: Request) -> JobStore:
    return request.app.state.store


SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")


async def current_tenant(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The tenant of the caller's key, or 401. Kept on the request, where the access log reads
    it and where this dependency finds it when `KeyFirstRoute` has checked the key already.

    Keys are cached by their digest (`lookup_cache_s`), so the raw key is not kept in memory.
    """
    known: str | None = getattr(request.state, "tenant", None)
    if known is not None:
        return known
    if credentials is None or not credentials.credentials:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    digest = key_digest(credentials.credentials)
    tenants: TtlCache[str, str] = request.app.state.tenants
    tenant = tenants.get(digest)
    if tenant is None:
        tenant = await asyncio.to_thread(_lookup_tenant, request.app.state.store, digest)
        if tenant is None:
            raise Unauthorized("invalid API key")
        tenants.put(digest, tenant)
    request.state.tenant = tenant
    return tenant


def _lookup_tenant(store: JobStore, digest: str) -> str | None:
    with store.sessions() as session:
        return tenant_of(session, digest)


TenantDep = Annotated[str, Depends(current_tenant)]


class KeyFirstRoute(APIRoute):
    """A route whose caller's key is checked before FastAPI reads its body or parameters.

    FastAPI parses a JSON body before it solves any dependency, so without this a malformed
    body reached `current_tenant` too late: a client with no valid key was answered 422 (and
    told about the route's body) instead of 401. Now any request without a valid key gets 401,
    whatever it carries.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def authenticated(request: Request) -> Response:
            await current_tenant(request, await _bearer(request))
            return await handler(request)

        return authenticated
