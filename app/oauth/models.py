"""`oauth_states` (one pending sign-in each) and `provider_alerts` (what the operator must fix)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Model, UTCDateTime, utcnow


class OAuthState(Model):
    """A sign-in in progress: found by the hash of its `state`, used once, short-lived."""

    __tablename__ = "oauth_states"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(20))
    code_verifier_enc: Mapped[bytes] = mapped_column(LargeBinary)
    return_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class ProviderAlert(Model):
    """A provider whose app registration is broken (`invalid_client`, expired secret)."""

    __tablename__ = "provider_alerts"

    provider: Mapped[str] = mapped_column(String(20), primary_key=True)
    code: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
