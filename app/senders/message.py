"""The one message builder: every path (test mail, mailbox, default relay, Gmail) sends its bytes.

Text parts are made 7-bit clean (quoted-printable or base64), so a message passes any relay
without 8BITMIME; only a non-ASCII local part in an address needs SMTPUTF8.
"""

from __future__ import annotations

import email.policy
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

_POLICY = email.policy.SMTP.clone(cte_type="7bit")
_UTF8_POLICY = email.policy.SMTP.clone(utf8=True)


@dataclass(frozen=True)
class MailAddress:
    """An address with an optional display name."""

    email: str
    name: str = ""

    def header(self) -> Address:
        local, _, domain = self.email.rpartition("@")
        return Address(display_name=self.name, username=local, domain=domain)

    @property
    def needs_smtputf8(self) -> bool:
        return not self.email.rpartition("@")[0].isascii()


@dataclass(frozen=True)
class Attachment:
    """A file attached to a message."""

    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True)
class OutgoingMessage:
    """Everything a driver needs to send one message; immutable once routed."""

    sender: MailAddress
    to: tuple[MailAddress, ...]
    subject: str
    message_id: str
    date: datetime
    cc: tuple[MailAddress, ...] = ()
    bcc: tuple[MailAddress, ...] = ()
    reply_to: MailAddress | None = None
    text: str | None = None
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    headers: tuple[tuple[str, str], ...] = field(default=())
    # Envelope recipients when not every header recipient is owed the message (a retry after
    # a partial refusal must not reach those who already have it).
    envelope_to: tuple[str, ...] | None = None

    @property
    def recipients(self) -> list[str]:
        """Envelope recipients: To, Cc and Bcc, each once, in that order, unless overridden."""
        if self.envelope_to is not None:
            return list(self.envelope_to)
        return list(dict.fromkeys(a.email for a in (*self.to, *self.cc, *self.bcc)))

    @property
    def needs_smtputf8(self) -> bool:
        return any(a.needs_smtputf8 for a in (self.sender, *self.to, *self.cc, *self.bcc))

    def to_email(self, *, include_bcc: bool = False) -> EmailMessage:
        """The MIME message; Bcc appears only when the transport takes recipients from headers."""
        msg = EmailMessage(policy=_POLICY)
        msg["From"] = self.sender.header()
        if self.to:
            msg["To"] = [a.header() for a in self.to]
        if self.cc:
            msg["Cc"] = [a.header() for a in self.cc]
        if include_bcc and self.bcc:
            msg["Bcc"] = [a.header() for a in self.bcc]
        if self.reply_to is not None:
            msg["Reply-To"] = self.reply_to.header()
        msg["Subject"] = self.subject
        msg["Date"] = format_datetime(self.date)
        msg["Message-ID"] = self.message_id
        for name, value in self.headers:
            msg[name] = value

        if self.html is not None and self.text is not None:
            msg.set_content(self.text)
            msg.add_alternative(self.html, subtype="html")
        elif self.html is not None:
            msg.set_content(self.html, subtype="html")
        else:
            msg.set_content(self.text or "")
        for attachment in self.attachments:
            maintype, _, subtype = attachment.content_type.partition("/")
            msg.add_attachment(
                attachment.content,
                maintype=maintype,
                subtype=subtype or "octet-stream",
                filename=attachment.filename,
            )
        return msg

    def as_bytes(self, *, include_bcc: bool = False) -> bytes:
        """The wire form: CRLF line ends, 7-bit clean unless an address needs SMTPUTF8."""
        policy = _UTF8_POLICY if self.needs_smtputf8 else _POLICY
        return self.to_email(include_bcc=include_bcc).as_bytes(policy=policy)


def make_message_id(domain: str) -> str:
    """A globally unique Message-ID, fixed at intake and reused on every attempt."""
    return f"<{uuid.uuid4().hex}@{domain}>"
