"""What routes are handed: the settings, the job store, the loaded students, the caller's tenant.

Everything lives on `app.state`, built once by `create_app`; routes name what they need with the
`...Dep` annotations below and never reach for globals.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import Unauthorized
from service.keys import tenant_of
from service.settings import ServiceSettings
from service.store import JobStore
from service.students import StudentModels


def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_students(request: Request) -> StudentModels:
    return request.app.state.students


SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
StudentsDep = Annotated[StudentModels, Depends(get_students)]
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")


def current_tenant(
    request: Request,
    store: StoreDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The tenant of the caller's key, or 401. Noted on the request for the access log."""
    if credentials is None or not credentials.credentials:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    with store.sessions() as session:
        tenant = tenant_of(session, credentials.credentials)
    if tenant is None:
        raise Unauthorized("invalid API key")
    request.state.tenant = tenant
    return tenant


TenantDep = Annotated[str, Depends(current_tenant)]
