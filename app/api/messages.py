"""`/v1/tenants/{tenant_id}/messages`: hand over, read, list and cancel messages."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from app.api.deps import RuntimeDep, SessionDep, TenantDep
from app.api.mailboxes import problem_responses
from app.outbox import service
from app.outbox.models import MessageStatus
from app.outbox.schemas import MessageCreate, MessagePage, MessageRead

router = APIRouter(prefix="/v1/tenants/{tenant_id}/messages", tags=["messages"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="Repeat a POST with the same key and body within 24 h to get the same message.",
    ),
]


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=MessageRead,
    responses=problem_responses(413),
)
async def create_message(
    tenant_id: TenantDep,
    body: MessageCreate,
    session: SessionDep,
    runtime: RuntimeDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> MessageRead:
    """Queue a message. It is stored before this answers; the worker sends it through the
    tenant's active mailbox, or the default sender with `Reply-To` the mailbox."""
    intake = await service.enqueue_message(
        session,
        runtime.settings,
        tenant_id=tenant_id,
        body=body,
        idempotency_key=idempotency_key,
    )
    if intake.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        runtime.outbox_wakeup.set()
    [read] = await service.read_messages(session, [intake.message])
    return read


@router.get("/{message_id}", response_model=MessageRead, responses=problem_responses(404))
async def get_message(
    tenant_id: TenantDep, message_id: uuid.UUID, session: SessionDep
) -> MessageRead:
    """A message, its status and every attempt to send it."""
    message = await service.get_message(session, tenant_id=tenant_id, message_id=message_id)
    [read] = await service.read_messages(session, [message])
    return read


@router.get("", response_model=MessagePage, responses=problem_responses())
async def list_messages(
    tenant_id: TenantDep,
    session: SessionDep,
    status: MessageStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: str | None = None,
) -> MessagePage:
    """The tenant's messages, newest first."""
    return await service.list_messages(
        session, tenant_id=tenant_id, status=status, limit=limit, cursor=cursor
    )


@router.post(
    "/{message_id}/cancel", response_model=MessageRead, responses=problem_responses(404, 409)
)
async def cancel_message(
    tenant_id: TenantDep, message_id: uuid.UUID, session: SessionDep
) -> MessageRead:
    """Cancel a message that is still `queued`; any other status answers 409."""
    message = await service.cancel_message(session, tenant_id=tenant_id, message_id=message_id)
    [read] = await service.read_messages(session, [message])
    return read
