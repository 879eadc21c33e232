"""Intake, reading, listing and cancelling messages. Intake commits before the 202 is sent.

Functions that take a session only flush; the request dependency commits.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.errors import ConflictError, InvalidInputError, NotFoundError, RelayError
from app.mailboxes.models import Mailbox
from app.outbox.models import Message, MessageAttempt, MessageKind, MessageStatus
from app.outbox.routing import choose_route, encode_payload
from app.outbox.schemas import AttemptRead, MessageCreate, MessagePage, MessageRead
from app.senders.message import make_message_id
from app.settings import Settings

IDEMPOTENCY_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class Intake:
    """The message that answers a POST, and whether it was a replay of an earlier one."""

    message: Message
    replayed: bool


def request_hash(body: MessageCreate) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def enqueue_message(
    session: AsyncSession,
    settings: Settings,
    *,
    tenant_id: str,
    body: MessageCreate,
    idempotency_key: str | None,
) -> Intake:
    """Store a message for delivery, or find the one an earlier request with this key made."""
    if body.estimated_size() > settings.max_message_bytes:
        raise RelayError(
            "message_too_large",
            f"The message exceeds MAILRELAY_MAX_MESSAGE_BYTES ({settings.max_message_bytes}).",
            status=413,
            title="Content too large",
        )
    digest = request_hash(body)
    if idempotency_key is not None:
        earlier = await _by_idempotency_key(session, tenant_id, idempotency_key, digest)
        if earlier is not None:
            return Intake(earlier, replayed=True)

    mailbox = await session.scalar(select(Mailbox).where(Mailbox.tenant_id == tenant_id))
    route = choose_route(mailbox=mailbox, settings=settings, reply_to=body.reply_to)
    payload = {
        "cc": body.cc,
        "bcc": body.bcc,
        "text": body.text,
        "html": body.html,
        "reply_to": body.reply_to,
        "attachments": [a.model_dump() for a in body.attachments],
        "headers": body.headers,
    }
    message = Message(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        kind=MessageKind.API,
        status=MessageStatus.QUEUED,
        message_id_header=make_message_id(settings.default_from.rpartition("@")[2]),
        subject=body.subject,
        from_header=str(route.sender.header()),
        reply_to_header=str(route.reply_to.header()) if route.reply_to else None,
        to=body.to,
        payload=encode_payload(payload),
        size_bytes=body.estimated_size(),
        meta=body.metadata,
        idempotency_key=idempotency_key,
        request_hash=digest,
        created_at=utcnow(),
        next_attempt_at=utcnow(),
    )
    if idempotency_key is None:
        session.add(message)
        await session.flush()
        return Intake(message, replayed=False)
    try:  # a savepoint, so that losing the race leaves the request's transaction usable
        async with session.begin_nested():
            session.add(message)
    except IntegrityError:
        # A concurrent request with the same key won; answer as it did.
        earlier = await _by_idempotency_key(session, tenant_id, idempotency_key, digest)
        if earlier is None:
            raise
        return Intake(earlier, replayed=True)
    return Intake(message, replayed=False)


async def _by_idempotency_key(
    session: AsyncSession, tenant_id: str, key: str, digest: str
) -> Message | None:
    earlier = await session.scalar(
        select(Message).where(Message.tenant_id == tenant_id, Message.idempotency_key == key)
    )
    if earlier is None:
        return None
    if earlier.created_at < utcnow() - IDEMPOTENCY_WINDOW:
        earlier.idempotency_key = None  # expired: the key is free again
        await session.flush()
        return None
    if earlier.request_hash != digest:
        raise InvalidInputError(
            "idempotency_key_reused",
            "This Idempotency-Key was used with a different request body in the last 24 hours.",
        )
    return earlier


async def get_message(session: AsyncSession, *, tenant_id: str, message_id: uuid.UUID) -> Message:
    message = await session.scalar(
        select(Message).where(Message.id == message_id, Message.tenant_id == tenant_id)
    )
    if message is None:
        raise NotFoundError("message_not_found", f"No message {message_id} for this tenant.")
    return message


async def read_messages(session: AsyncSession, messages: list[Message]) -> list[MessageRead]:
    """Messages with their attempts, in one extra query."""
    ids = [m.id for m in messages]
    attempts: dict[uuid.UUID, list[AttemptRead]] = {i: [] for i in ids}
    if ids:
        rows = await session.scalars(
            select(MessageAttempt)
            .where(MessageAttempt.message_id.in_(ids))
            .order_by(MessageAttempt.at, MessageAttempt.id)
        )
        for attempt in rows:
            attempts[attempt.message_id].append(
                AttemptRead.model_validate(attempt, from_attributes=True)
            )
    return [
        MessageRead(
            id=m.id,
            status=m.status,
            via=m.via,
            from_=m.from_header,
            reply_to=m.reply_to_header,
            to=m.to,
            subject=m.subject,
            message_id_header=m.message_id_header,
            attempts=attempts[m.id],
            metadata=m.meta,
            created_at=m.created_at,
            sent_at=m.sent_at,
        )
        for m in messages
    ]


def _encode_cursor(message: Message) -> str:
    raw = f"{message.created_at.isoformat()}|{message.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, _, message_id = raw.partition("|")
        created_at = datetime.fromisoformat(created)
        if created_at.tzinfo is None:
            raise ValueError("a cursor's time has a zone")
        return created_at, uuid.UUID(message_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInputError("invalid_cursor", "The cursor is not one this API gave.") from None


async def list_messages(
    session: AsyncSession,
    *,
    tenant_id: str,
    status: MessageStatus | None,
    limit: int,
    cursor: str | None,
) -> MessagePage:
    query = select(Message).where(Message.tenant_id == tenant_id, Message.kind == MessageKind.API)
    if status is not None:
        query = query.where(Message.status == status)
    if cursor is not None:
        created_at, message_id = _decode_cursor(cursor)
        query = query.where(tuple_(Message.created_at, Message.id) < (created_at, message_id))
    query = query.order_by(Message.created_at.desc(), Message.id.desc()).limit(limit + 1)
    messages = list(await session.scalars(query))
    more = len(messages) > limit
    messages = messages[:limit]
    return MessagePage(
        items=await read_messages(session, messages),
        next_cursor=_encode_cursor(messages[-1]) if more else None,
    )


async def cancel_message(
    session: AsyncSession, *, tenant_id: str, message_id: uuid.UUID
) -> Message:
    """Cancel a message that no worker has claimed yet."""
    result = await session.execute(
        update(Message)
        .where(
            Message.id == message_id,
            Message.tenant_id == tenant_id,
            Message.status == MessageStatus.QUEUED,
        )
        .values(status=MessageStatus.CANCELLED, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    message = await get_message(session, tenant_id=tenant_id, message_id=message_id)
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise ConflictError(
            "message_not_cancellable",
            f"Only queued messages can be cancelled; this one is {message.status}.",
        )
    await session.refresh(message)
    return message
