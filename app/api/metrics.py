"""`/metrics` for Prometheus: the outbox and the mailboxes as the database sees them.

API and worker replicas run as separate processes, so per-process counters would each tell part
of the story. These gauges are read from the shared database at scrape time instead: every
replica reports the same, complete numbers.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from sqlalchemy import func, select

from app.api.deps import RuntimeDep
from app.db.base import utcnow
from app.mailboxes.models import Mailbox, MailboxStatus
from app.oauth.alerts import active_alerts
from app.outbox.models import Message, MessageStatus
from app.webhooks.models import Event

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus text format: outbox depth and age, mailbox states, webhook backlog, alerts."""
    registry = CollectorRegistry()
    messages = Gauge(
        "mailrelay_messages", "Messages in the outbox by status.", ["status"], registry=registry
    )
    oldest = Gauge(
        "mailrelay_oldest_queued_seconds",
        "Age of the oldest queued message (0 when none).",
        registry=registry,
    )
    mailboxes = Gauge(
        "mailrelay_mailboxes", "Tenant mailboxes by state.", ["status"], registry=registry
    )
    webhooks = Gauge(
        "mailrelay_webhook_events_pending",
        "Webhook events not yet delivered.",
        registry=registry,
    )
    alerts = Gauge(
        "mailrelay_provider_alert",
        "1 while an OAuth app registration needs the operator.",
        ["provider", "code"],
        registry=registry,
    )
    async with runtime.sessionmaker() as session:
        by_status = select(Message.status, func.count()).group_by(Message.status)
        counts: dict[str, int] = dict((await session.execute(by_status)).all())
        first = await session.scalar(
            select(func.min(Message.created_at)).where(Message.status == MessageStatus.QUEUED)
        )
        by_state = select(Mailbox.status, func.count()).group_by(Mailbox.status)
        states: dict[str, int] = dict((await session.execute(by_state)).all())
        pending = await session.scalar(
            select(func.count()).select_from(Event).where(Event.delivered_at.is_(None))
        )
        for alert in await active_alerts(session):
            alerts.labels(alert.provider, alert.code).set(1)
    for status in MessageStatus:
        messages.labels(status.value).set(counts.get(status, 0))
    for state in MailboxStatus:
        mailboxes.labels(state.value).set(states.get(state, 0))
    if first is not None:
        if isinstance(first, str):  # SQLite's MIN() returns the stored text
            first = datetime.fromisoformat(first)
        if first.tzinfo is None:
            first = first.replace(tzinfo=UTC)
        oldest.set(max(0.0, (utcnow() - first).total_seconds()))
    webhooks.set(pending or 0)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
