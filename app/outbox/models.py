"""The outbox tables: `messages` (the queue itself) and `message_attempts`."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, deferred, mapped_column

from app.db.base import Model, UTCDateTime, new_id, one_of, utcnow


class MessageStatus(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Via(enum.StrEnum):
    MAILBOX = "mailbox"
    DEFAULT = "default"


class MessageKind(enum.StrEnum):
    API = "api"  # handed over by the HRMS
    NOTIFICATION = "notification"  # written by the relay itself (mailbox deactivated)


class Outcome(enum.StrEnum):
    SENT = "sent"
    DEFERRED = "deferred"  # transient failure, retried later
    REROUTED = "rerouted"  # the mailbox failed for good; the default sender takes over
    UNKNOWN = "unknown"  # may have been delivered; retried with the same Message-ID
    FAILED = "failed"  # refused for good


class Message(Model):
    """One message in the outbox; its row is the queue entry, its lease the claim."""

    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint(one_of("status", MessageStatus), name="status"),
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_messages_idempotency"),
        # The worker's claim: due rows by time. Partial on PostgreSQL, so it stays small.
        Index(
            "ix_messages_due",
            "next_attempt_at",
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
        Index(
            "ix_messages_leased",
            "lease_until",
            postgresql_where=text("status = 'sending'"),
            sqlite_where=text("status = 'sending'"),
        ),
        Index("ix_messages_tenant_created", "tenant_id", "created_at", "id"),
        Index(
            "ix_messages_inflight",
            "route_key",
            postgresql_where=text("status = 'sending'"),
            sqlite_where=text("status = 'sending'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[MessageKind] = mapped_column(String(20), default=MessageKind.API)
    status: Mapped[MessageStatus] = mapped_column(String(20), default=MessageStatus.QUEUED)
    via: Mapped[Via | None] = mapped_column(String(10))
    force_default: Mapped[bool] = mapped_column(default=False)

    message_id_header: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str] = mapped_column(Text)
    from_header: Mapped[str | None] = mapped_column(Text)
    reply_to_header: Mapped[str | None] = mapped_column(Text)
    to: Mapped[list[str]] = mapped_column(JSON)
    # Recipients still owed the message after a partial refusal (None: every recipient).
    pending_recipients: Mapped[list[str] | None] = mapped_column(JSON)
    # What the HRMS sent (text, html, cc, bcc, reply_to, attachments, headers), as JSON.
    payload: Mapped[bytes] = deferred(mapped_column(LargeBinary))
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)

    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))

    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    # The sender a claim took ("mailbox:<id>" or "default"): per-sender caps count these.
    route_key: Mapped[str | None] = mapped_column(String(64))
    # When sending through the mailbox first failed transiently; after the retry window the
    # default sender takes over.
    mailbox_failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SendLimit(Model):
    """A token bucket per sender, shared by every worker: the send-rate limit."""

    __tablename__ = "send_limits"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    tokens: Mapped[float] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MessageAttempt(Model):
    """One try to send a message: when, through which sender, and what came of it."""

    __tablename__ = "message_attempts"
    __table_args__ = (CheckConstraint(one_of("outcome", Outcome), name="outcome"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    via: Mapped[Via] = mapped_column(String(10))
    outcome: Mapped[Outcome] = mapped_column(String(10))
    code: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
