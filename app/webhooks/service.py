"""Recording events: in the same transaction as the change they describe."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.webhooks.models import Event

EVENT_TYPES = frozenset(
    {"mailbox.activated", "mailbox.deactivated", "message.sent", "message.failed"}
)


def record_event(
    session: AsyncSession,
    *,
    type: str,
    tenant_id: str,
    data: dict[str, Any],
    deliver: bool,
) -> Event:
    """Add an event to the session; without a webhook URL it is kept as already delivered."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type}")
    event = Event(type=type, tenant_id=tenant_id, data=data)
    if not deliver:
        event.delivered_at = utcnow()
    session.add(event)
    return event
