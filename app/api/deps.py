"""`Annotated` dependencies: the runtime, a request-scoped session, the caller, the tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.apikeys.service import Principal, authenticate
from app.errors import ForbiddenError, UnauthorizedError
from app.mailboxes.tenants import TENANT_ID_PATTERN
from app.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the handler returns, rolled back if it raises."""
    async with runtime.sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


# scope="function": commit before the response is sent, so a 2xx means the change is durable.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="An API key made by `mailrelay apikey create`.")


async def get_principal(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise UnauthorizedError(
            "unauthorized", "Send an API key as 'Authorization: Bearer <key>'.", headers=challenge
        )
    # A short session of its own: the request's transaction (if any) starts only when the
    # handler needs it, and a handler that talks to a mail server holds none.
    async with runtime.sessionmaker() as session:
        principal = await authenticate(session, credentials.credentials)
    if principal is None:
        raise UnauthorizedError(
            "unauthorized", "The API key is unknown or revoked.", headers=challenge
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_tenant_id(
    tenant_id: Annotated[str, Path(pattern=TENANT_ID_PATTERN, max_length=64)],
    principal: PrincipalDep,
) -> str:
    if not principal.may_access(tenant_id):
        raise ForbiddenError("tenant_forbidden", "This API key belongs to another tenant.")
    return tenant_id


TenantDep = Annotated[str, Depends(get_tenant_id)]
