"""Which sender a message leaves through, and the From / Reply-To that go with it (DESIGN.md)."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any

from app.mailboxes.models import Mailbox, MailboxStatus
from app.outbox.models import Message, MessageKind, Via
from app.senders.message import Attachment, MailAddress, OutgoingMessage
from app.settings import Settings

DEFAULT_ROUTE_KEY = "default"


@dataclass(frozen=True)
class Route:
    """A sender and the headers it implies."""

    via: Via
    sender: MailAddress
    reply_to: MailAddress | None
    mailbox_id: uuid.UUID | None = None

    @property
    def key(self) -> str:
        return f"mailbox:{self.mailbox_id}" if self.via == Via.MAILBOX else DEFAULT_ROUTE_KEY


def choose_route(
    *,
    mailbox: Mailbox | None,
    settings: Settings,
    reply_to: str | None,
    force_default: bool = False,
    kind: MessageKind = MessageKind.API,
) -> Route:
    caller_reply_to = MailAddress(reply_to) if reply_to else None
    if kind == MessageKind.NOTIFICATION or mailbox is None:
        return Route(
            Via.DEFAULT,
            MailAddress(settings.default_from, settings.default_from_name),
            caller_reply_to,
        )
    if mailbox.status == MailboxStatus.ACTIVE and not force_default:
        return Route(
            Via.MAILBOX,
            MailAddress(mailbox.email, mailbox.display_name),
            caller_reply_to,
            mailbox_id=mailbox.id,
        )
    return Route(
        Via.DEFAULT,
        MailAddress(settings.default_from, mailbox.display_name),
        caller_reply_to or MailAddress(mailbox.email, mailbox.display_name),
    )


def encode_payload(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def outgoing_message(message: Message, route: Route) -> OutgoingMessage:
    """The message as a driver sends it through `route`."""
    payload = json.loads(message.payload)
    pending = tuple(message.pending_recipients) if message.pending_recipients else None
    return OutgoingMessage(
        sender=route.sender,
        to=tuple(MailAddress(a) for a in message.to),
        cc=tuple(MailAddress(a) for a in payload.get("cc", [])),
        bcc=tuple(MailAddress(a) for a in payload.get("bcc", [])),
        reply_to=route.reply_to,
        subject=message.subject,
        message_id=message.message_id_header,
        date=message.created_at,
        text=payload.get("text"),
        html=payload.get("html"),
        attachments=tuple(
            Attachment(a["filename"], a["content_type"], base64.b64decode(a["content_base64"]))
            for a in payload.get("attachments", [])
        ),
        headers=tuple(payload.get("headers", {}).items()),
        envelope_to=pending,
    )
