"""Delivery fixtures: a default relay, tenants in each mailbox state, a worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from app.mailboxes.models import Mailbox, MailboxStatus
from app.outbox.models import Message, MessageKind
from app.outbox.worker import Worker
from app.runtime import Runtime
from app.settings import Settings
from app.webhooks.models import Event
from tests.conftest import TENANT_PASSWORD, SmtpServerFactory
from tests.fixtures.smtpd import SmtpServer


@pytest.fixture
def default_relay(smtp_server: SmtpServerFactory) -> SmtpServer:
    """The operator's relay (MAILRELAY_DEFAULT_SMTP_URL): plain SMTP, no AUTH."""
    return smtp_server(security="none", users=None)


@pytest.fixture
def settings(settings: Settings, default_relay: SmtpServer) -> Settings:
    url = f"smtp://127.0.0.1:{default_relay.port}?security=none"
    # Rate limits have tests of their own; here they would only slow things down.
    return settings.model_copy(
        update={"default_smtp_url": SecretStr(url), "smtp_rate_per_minute": 600_000}
    )


@pytest.fixture
async def worker(runtime: Runtime) -> AsyncIterator[Worker]:
    worker = Worker(runtime, owner="test-worker")
    yield worker
    await worker.aclose()


async def drain(worker: Worker, seconds: float = 30) -> None:
    async with asyncio.timeout(seconds):
        await worker.run_until_empty()


TenantFactory = Callable[..., Awaitable[str]]


@pytest.fixture
def tenant(admin: httpx.AsyncClient, runtime: Runtime) -> TenantFactory:
    """`await tenant("acme", state, server=...)`: a tenant whose mailbox is in `state`."""

    async def make(
        tenant_id: str, state: str | None, *, server: SmtpServer | None = None, **smtp: Any
    ) -> str:
        if state is None:
            return tenant_id
        name = tenant_id.capitalize()
        mailbox = {"display_name": f"{name} HR", "email": f"hr@{tenant_id}.test"}
        if "notify_emails" in smtp:
            mailbox["notify_emails"] = smtp.pop("notify_emails")
        assert (
            await admin.post(f"/v1/tenants/{tenant_id}/mailbox", json=mailbox)
        ).status_code == 201
        if state == "not_configured":
            return tenant_id
        assert server is not None
        body = {
            "username": "hr@acme.test",
            "password": TENANT_PASSWORD,
            "host": "127.0.0.1",
            "port": server.port,
            "security": server.security,
            **smtp,
        }
        assert (
            await admin.put(f"/v1/tenants/{tenant_id}/mailbox/smtp", json=body)
        ).status_code == 200
        tested = await admin.post(f"/v1/tenants/{tenant_id}/mailbox/test")
        assert tested.json()["status"] == "active", tested.text
        server.received.clear()
        if state == "inactive":
            async with runtime.sessionmaker.begin() as session:
                await session.execute(
                    update(Mailbox)
                    .where(Mailbox.tenant_id == tenant_id)
                    .values(status=MailboxStatus.INACTIVE)
                )
        return tenant_id

    return make


async def post_message(admin: httpx.AsyncClient, tenant_id: str, **fields: Any) -> dict[str, Any]:
    body = {"to": ["someone@example.test"], "subject": "Hello", "text": "Hi", **fields}
    response = await admin.post(f"/v1/tenants/{tenant_id}/messages", json=body)
    assert response.status_code == 202, response.text
    result: dict[str, Any] = response.json()
    return result


async def events(runtime: Runtime, type_: str | None = None) -> list[Event]:
    async with runtime.sessionmaker() as session:
        query = select(Event).order_by(Event.created_at)
        if type_ is not None:
            query = query.where(Event.type == type_)
        return list(await session.scalars(query))


async def notifications(runtime: Runtime) -> list[Message]:
    async with runtime.sessionmaker() as session:
        return list(
            await session.scalars(select(Message).where(Message.kind == MessageKind.NOTIFICATION))
        )
