"""A broken mailbox turns inactive once: one notification mail, one `mailbox.deactivated` event."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.mailboxes.models import Mailbox, MailboxStatus
from app.outbox.models import Message, MessageKind, MessageStatus
from app.outbox.routing import encode_payload
from app.senders.message import make_message_id
from app.settings import Settings
from app.webhooks.service import record_event

log = logging.getLogger(__name__)


async def deactivate_mailbox(
    session: AsyncSession,
    settings: Settings,
    *,
    mailbox_id: uuid.UUID,
    settings_version: int,
    code: str,
    detail: str,
) -> bool:
    """Make an active mailbox inactive; False when another worker (or a settings change) won.

    The conditional UPDATE is the whole guard: whoever turns `active` into `inactive` for these
    settings also writes the notification and the event, in the same transaction.
    """
    now = utcnow()
    result = await session.execute(
        update(Mailbox)
        .where(
            Mailbox.id == mailbox_id,
            Mailbox.status == MailboxStatus.ACTIVE,
            Mailbox.settings_version == settings_version,
        )
        .values(
            status=MailboxStatus.INACTIVE,
            deactivated_at=now,
            last_error_code=code,
            last_error_detail=detail,
            last_error_at=now,
            failing_since=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    mailbox = await session.scalar(select(Mailbox).where(Mailbox.id == mailbox_id))
    assert mailbox is not None  # noqa: S101 (just updated)
    log.warning(
        "mailbox deactivated",
        extra={"tenant_id": mailbox.tenant_id, "code": code, "mailbox": mailbox.email},
    )
    session.add(_notification(mailbox, settings, code=code, detail=detail))
    record_event(
        session,
        type="mailbox.deactivated",
        tenant_id=mailbox.tenant_id,
        data={
            "email": mailbox.email,
            "provider": mailbox.provider,
            "code": code,
            "detail": detail,
            "deactivated_at": now.isoformat(),
        },
        deliver=settings.webhook_url is not None,
    )
    return True


def _notification(mailbox: Mailbox, settings: Settings, *, code: str, detail: str) -> Message:
    text = (
        f"Hello,\n\n"
        f"mail of {mailbox.display_name} could no longer be sent through {mailbox.email},\n"
        f"so the mailbox was switched off. Until it is reconnected, mail leaves from\n"
        f"{settings.default_from} with replies going to {mailbox.email}; nothing is lost.\n\n"
        f"What went wrong ({code}):\n  {detail}\n\n"
        "To reconnect, open the mail settings of your HR system, update the connection\n"
        "(or sign in again with Google or Microsoft) and send a test mail. The mailbox is\n"
        "used again as soon as the test mail passes.\n"
    )
    now = utcnow()
    return Message(
        id=uuid.uuid4(),
        tenant_id=mailbox.tenant_id,
        kind=MessageKind.NOTIFICATION,
        status=MessageStatus.QUEUED,
        force_default=True,
        message_id_header=make_message_id(settings.default_from.rpartition("@")[2]),
        subject=f"Your mailbox {mailbox.email} was disconnected",
        to=list(mailbox.notify_emails or [mailbox.email]),
        payload=encode_payload({"text": text}),
        size_bytes=len(text),
        created_at=now,
        next_attempt_at=now,
    )
