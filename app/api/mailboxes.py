"""`/v1/tenants/{tenant_id}/mailbox`: create, read, change, delete, connect by SMTP, test."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from app.api.deps import RuntimeDep, SessionDep, TenantDep
from app.api.problems import PROBLEM_JSON
from app.mailboxes import service
from app.mailboxes.models import Mailbox, Provider
from app.mailboxes.schemas import (
    MailboxCreate,
    MailboxRead,
    MailboxUpdate,
    SmtpSettingsIn,
    TestMailRequest,
)
from app.oauth.service import revoke_google_token
from app.runtime import Runtime


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {"description": "A problem document", "content": {PROBLEM_JSON: {}}}
        for code in (401, 403, 422, *statuses)
    }


router = APIRouter(prefix="/v1/tenants/{tenant_id}/mailbox", tags=["mailbox"])


def available_providers(runtime: Runtime) -> list[Provider]:
    settings = runtime.settings
    providers = [Provider.SMTP]
    if settings.google_client_id:
        providers.append(Provider.GOOGLE)
    if settings.microsoft_client_id:
        providers.append(Provider.MICROSOFT)
    return providers


def _read(mailbox: Mailbox, runtime: Runtime) -> MailboxRead:
    return MailboxRead.build(mailbox, available_providers=available_providers(runtime))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=MailboxRead,
    responses=problem_responses(409),
)
async def create_mailbox(
    tenant_id: TenantDep, body: MailboxCreate, session: SessionDep, runtime: RuntimeDep
) -> MailboxRead:
    """Create the tenant's mailbox; its mail gets `Reply-To` this address from now on."""
    mailbox = await service.create_mailbox(session, tenant_id=tenant_id, data=body)
    return _read(mailbox, runtime)


@router.get("", response_model=MailboxRead, responses=problem_responses(404))
async def get_mailbox(
    tenant_id: TenantDep, session: SessionDep, runtime: RuntimeDep
) -> MailboxRead:
    """The mailbox, its state and the connection buttons the settings screen should show."""
    return _read(await service.get_mailbox(session, tenant_id), runtime)


@router.patch("", response_model=MailboxRead, responses=problem_responses(404))
async def update_mailbox(
    tenant_id: TenantDep, body: MailboxUpdate, session: SessionDep, runtime: RuntimeDep
) -> MailboxRead:
    """Change the display name or who is told when the mailbox breaks."""
    mailbox = await service.update_mailbox(session, tenant_id=tenant_id, data=body)
    return _read(mailbox, runtime)


@router.delete("", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(404))
async def delete_mailbox(
    tenant_id: TenantDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Delete the mailbox and its secrets; mail goes back to the plain default sender.
    A Google grant is revoked first (best effort)."""
    await revoke_google_token(runtime, tenant_id=tenant_id)  # before the transaction opens
    await service.delete_mailbox(session, tenant_id=tenant_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/smtp", response_model=MailboxRead, responses=problem_responses(404))
async def save_smtp_settings(
    tenant_id: TenantDep, body: SmtpSettingsIn, session: SessionDep, runtime: RuntimeDep
) -> MailboxRead:
    """Connect by SMTP. The mailbox becomes `pending_test` until a test mail passes."""
    mailbox = await service.save_smtp_settings(session, runtime, tenant_id=tenant_id, data=body)
    return _read(mailbox, runtime)


@router.post("/test", response_model=MailboxRead, responses=problem_responses(404, 409))
async def send_test_mail(
    tenant_id: TenantDep, runtime: RuntimeDep, body: TestMailRequest | None = None
) -> MailboxRead:
    """Send a real mail through the connection. A pass makes the mailbox `active`; a failure
    answers 422 with the failure's `code` (`smtp_auth_failed`, `smtp_tls_failed`,
    `smtp_connect_failed`, `smtp_timeout`, `smtp_rejected`, ...) and keeps it as `last_error`."""
    to = body.to if body is not None else None
    mailbox = await service.send_test_mail(runtime, tenant_id=tenant_id, to=to)
    return _read(mailbox, runtime)
