"""The worker delivers webhook events end to end, also after the receiver was down a while."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from pydantic import SecretStr

from app.outbox.worker import Worker
from app.runtime import Runtime
from app.settings import Settings
from tests.conftest import SmtpServerFactory
from tests.fixtures.smtpd import SmtpServer
from tests.outbox.conftest import TenantFactory, post_message
from tests.webhooks.receiver import Receiver

SECRET = "whsec-test-3f9a"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(SECRET.encode())  # not started: down until the test starts it
    yield receiver
    receiver.stop()


@pytest.fixture
def settings(settings: Settings, receiver: Receiver) -> Settings:
    return settings.model_copy(
        update={
            "webhook_url": receiver.url,
            "webhook_secret": SecretStr(SECRET),
            "webhook_timeout": timedelta(seconds=2),
        }
    )


async def test_events_reach_the_receiver_after_an_outage(
    admin: httpx.AsyncClient,
    smtp_server: SmtpServerFactory,
    default_relay: SmtpServer,
    tenant: TenantFactory,
    runtime: Runtime,
    receiver: Receiver,
) -> None:
    server = smtp_server(security="starttls")
    await tenant("acme", "active", server=server)  # records mailbox.activated
    posted = [await post_message(admin, "acme", subject=f"m{n}") for n in range(3)]
    failed = await post_message(admin, "globex", to=["x@example.test"], subject="refused")
    default_relay.rcpt_replies["x@example.test"] = "550 5.1.1 no such user"

    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(runtime, owner="hooks").run(stop))
    try:
        await asyncio.sleep(1.0)  # deliveries happen; webhook posts are refused meanwhile
        assert receiver.received == []
        receiver.start()
        async with asyncio.timeout(20):
            while len({d.event_id for d in receiver.received if d.status == 200}) < 5:  # noqa: ASYNC110 (another thread fills it)
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await worker

    bodies = [json.loads(d.body) for d in receiver.received if d.status == 200]
    assert all(d.signature_valid for d in receiver.received)
    types = sorted(body["type"] for body in {b["id"]: b for b in bodies}.values())
    assert types == ["mailbox.activated", "message.failed", *["message.sent"] * 3]
    sent_ids = {b["data"]["message_id"] for b in bodies if b["type"] == "message.sent"}
    assert sent_ids == {m["id"] for m in posted}
    [failure] = [b for b in bodies if b["type"] == "message.failed"]
    assert failure["data"]["message_id"] == failed["id"]
    assert failure["data"]["code"] == "smtp_rejected"
    assert failure["tenant_id"] == "globex"
