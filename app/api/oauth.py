"""Sign-in with Google or Microsoft: start (API key) and the public browser callback."""

from __future__ import annotations

import html
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import RuntimeDep, SessionDep, TenantDep
from app.api.mailboxes import problem_responses
from app.api.problems import PROBLEM_JSON
from app.oauth import service

ProviderName = Literal["google", "microsoft"]

router = APIRouter(tags=["oauth"])


class AuthorizationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    return_url: str | None = Field(
        default=None,
        max_length=2000,
        description="Where the browser returns afterwards with ?result=authorized or "
        "?result=error&code=…; must be on an origin in MAILRELAY_OAUTH_RETURN_ORIGINS.",
    )


class AuthorizationStart(BaseModel):
    authorization_url: str = Field(description="Open this in the user's browser.")
    expires_at: datetime


@router.post(
    "/v1/tenants/{tenant_id}/mailbox/oauth/{provider}",
    response_model=AuthorizationStart,
    responses=problem_responses(404, 409),
)
async def start_authorization(
    tenant_id: TenantDep,
    provider: ProviderName,
    session: SessionDep,
    runtime: RuntimeDep,
    body: AuthorizationRequest | None = None,
) -> AuthorizationStart:
    """Begin "Sign in with Google / Microsoft" for the tenant's mailbox. After the user consents,
    the mailbox is `pending_test`; a passing test mail activates it."""
    url, expires_at = await service.start_authorization(
        session,
        runtime,
        tenant_id=tenant_id,
        provider_name=provider,
        return_url=body.return_url if body else None,
    )
    return AuthorizationStart(authorization_url=url, expires_at=expires_at)


_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{title}</title></head><body style="font-family:sans-serif;margin:3em">
<h1>{title}</h1><p>{text}</p></body></html>"""


@router.get(
    "/v1/oauth/{provider}/callback",
    response_class=HTMLResponse,
    responses={
        303: {"description": "Back to the return_url with the result."},
        422: {"description": "A problem document", "content": {PROBLEM_JSON: {}}},
    },
)
async def oauth_callback(
    provider: ProviderName,
    runtime: RuntimeDep,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
) -> Response:
    """Where the provider sends the browser back. Public: the `state` is the credential."""
    result = await service.finish_authorization(
        runtime, provider_name=provider, code=code, state=state, error=error
    )
    if result.redirect_url is not None:
        return RedirectResponse(result.redirect_url, status_code=303)
    if result.code is None:
        page = _PAGE.format(
            title="Mailbox connected",
            text="Go back to the HR system and send a test mail to activate it. "
            "You can close this window.",
        )
        return HTMLResponse(page)
    page = _PAGE.format(
        title="The mailbox was not connected",
        text="Start again from the HR system's mail settings. "
        f"(Reason: {html.escape(result.code)})",
    )
    return HTMLResponse(page, status_code=400)
