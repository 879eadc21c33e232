"""The `mailboxes` table: one per tenant at most."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import JSON, CheckConstraint, Integer, LargeBinary, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Model, UTCDateTime, new_id, one_of, utcnow
from app.senders.smtp import Security


class MailboxStatus(enum.StrEnum):
    NOT_CONFIGURED = "not_configured"
    PENDING_TEST = "pending_test"
    ACTIVE = "active"
    INACTIVE = "inactive"


class Provider(enum.StrEnum):
    SMTP = "smtp"
    GOOGLE = "google"
    MICROSOFT = "microsoft"


class Mailbox(Model):
    """A tenant's mailbox, its connection settings (secrets encrypted) and its state."""

    __tablename__ = "mailboxes"
    __table_args__ = (
        CheckConstraint(one_of("status", MailboxStatus), name="status"),
        CheckConstraint(f"provider IS NULL OR {one_of('provider', Provider)}", name="provider"),
        CheckConstraint(
            f"smtp_security IS NULL OR {one_of('smtp_security', Security)}", name="smtp_security"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    notify_emails: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[MailboxStatus] = mapped_column(String(20), default=MailboxStatus.NOT_CONFIGURED)
    provider: Mapped[Provider | None] = mapped_column(String(20))

    smtp_username: Mapped[str | None] = mapped_column(String(320))
    smtp_host: Mapped[str | None] = mapped_column(String(253))
    smtp_port: Mapped[int | None] = mapped_column(Integer)
    smtp_security: Mapped[Security | None] = mapped_column(String(10))
    smtp_password_enc: Mapped[bytes | None] = mapped_column(LargeBinary)

    # OAuth (Google, Microsoft): only tokens, encrypted; `token_version` is the compare-and-swap
    # guard of refreshes, `refresh_lock_until` lets one worker at a time refresh.
    oauth_account_email: Mapped[str | None] = mapped_column(String(320))
    oauth_scopes: Mapped[list[str] | None] = mapped_column(JSON)
    oauth_authorized_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    oauth_access_token_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    oauth_refresh_token_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    oauth_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # refresh after this
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    refresh_lock_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # Bumped whenever the connection changes, so a test that started before a change cannot
    # activate the settings that replaced the ones it tested.
    settings_version: Mapped[int] = mapped_column(Integer, default=0)

    # Since when connections to the mailbox's server fail (cleared by any success); a breakdown
    # lasting MAILRELAY_MAILBOX_BROKEN_AFTER counts as broken credentials.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)

    last_error_code: Mapped[str | None] = mapped_column(String(64))
    last_error_detail: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def secret_context(self, field: str) -> str:
        """What an encrypted field of this mailbox is bound to (see `app.crypto`)."""
        if self.id is None:
            raise ValueError("the mailbox needs its id before a secret is bound to it")
        return f"mailbox:{self.id}:{field}"
