"""Webhook delivery against a real HTTP receiver: signing, retries, outages, races, pruning."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from app.db.base import utcnow
from app.runtime import Runtime
from app.settings import Settings
from app.webhooks.delivery import (
    WebhookDispatcher,
    signature_header,
    verify_signature,
)
from app.webhooks.models import Event
from app.webhooks.service import EVENT_TYPES, record_event
from tests.webhooks.receiver import Receiver

SECRET = "whsec-test-0123456789"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(SECRET.encode())
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def settings(settings: Settings, receiver: Receiver) -> Settings:
    return settings.model_copy(
        update={
            "webhook_url": receiver.url,
            "webhook_secret": SecretStr(SECRET),
            "retry_base": timedelta(seconds=0.05),
            "retry_max": timedelta(seconds=0.3),
            "worker_poll_interval": timedelta(seconds=0.05),
            "worker_batch_size": 5,
        }
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as http:
        yield http


@pytest.fixture
def dispatcher(runtime: Runtime, http: httpx.AsyncClient) -> WebhookDispatcher:
    return WebhookDispatcher(runtime, http=http, owner="worker-1")


async def record(runtime: Runtime, *types: str) -> list[uuid.UUID]:
    async with runtime.sessionmaker.begin() as session:
        events = [
            record_event(
                session,
                type=type_,
                tenant_id="acme",
                data={"n": n, "note": "Grüße"},
                deliver=True,
            )
            for n, type_ in enumerate(types)
        ]
    return [event.id for event in events]


async def load(runtime: Runtime, event_id: uuid.UUID) -> Event:
    async with runtime.sessionmaker() as session:
        return await session.get_one(Event, event_id)


async def drive_until(
    dispatcher: WebhookDispatcher,
    runtime: Runtime,
    event_id: uuid.UUID,
    done: Callable[[Event], bool],
) -> Event:
    """Call `run_once` until the event's row satisfies `done` (5 s at most)."""
    async with asyncio.timeout(5):
        while True:
            await dispatcher.run_once()
            row = await load(runtime, event_id)
            if done(row):
                return row
            await asyncio.sleep(0.02)


async def wait_for_row(
    runtime: Runtime, event_id: uuid.UUID, done: Callable[[Event], bool]
) -> Event:
    while True:
        row = await load(runtime, event_id)
        if done(row):
            return row
        await asyncio.sleep(0.02)


async def test_each_event_is_delivered_once_signed_with_its_json_body(
    runtime: Runtime, dispatcher: WebhookDispatcher, receiver: Receiver
) -> None:
    types = sorted(EVENT_TYPES)
    ids = await record(runtime, *types)

    assert await dispatcher.run_once() == 4

    assert len(receiver.received) == 4
    for n, (event_id, type_) in enumerate(zip(ids, types, strict=True)):
        [delivery] = receiver.delivered(event_id)
        assert delivery.signature_valid
        assert delivery.event_type == type_
        assert delivery.content_type == "application/json"
        row = await load(runtime, event_id)
        body = json.loads(delivery.body)
        assert body == {
            "id": str(event_id),
            "type": type_,
            "created_at": body["created_at"],
            "tenant_id": "acme",
            "data": {"n": n, "note": "Grüße"},
        }
        assert body["created_at"].endswith("Z")
        assert datetime.fromisoformat(body["created_at"]) == row.created_at
        compact = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        assert delivery.body == compact
        assert row.delivered_at is not None
        assert row.lease_until is None
        assert row.attempt_count == 0

    assert await dispatcher.run_once() == 0
    assert len(receiver.received) == 4


async def test_503_is_retried_until_the_receiver_recovers(
    runtime: Runtime, dispatcher: WebhookDispatcher, receiver: Receiver
) -> None:
    receiver.status, receiver.retry_after = 503, "0"
    [event_id] = await record(runtime, "message.failed")

    failing = await drive_until(dispatcher, runtime, event_id, lambda row: row.attempt_count >= 2)
    assert failing.delivered_at is None
    assert failing.lease_until is None
    assert failing.last_error == "HTTP 503"
    assert SECRET not in failing.last_error

    receiver.status, receiver.retry_after = 200, None
    row = await drive_until(dispatcher, runtime, event_id, lambda row: row.delivered_at is not None)

    statuses = [d.status for d in receiver.received if d.event_id == str(event_id)]
    assert statuses == [503] * row.attempt_count + [200]
    assert row.attempt_count >= 2
    assert all(d.signature_valid for d in receiver.received)


@pytest.mark.parametrize("retry_after", ["5", "date"])
async def test_retry_after_postpones_the_next_attempt(
    runtime: Runtime, dispatcher: WebhookDispatcher, receiver: Receiver, retry_after: str
) -> None:
    if retry_after == "date":
        retry_after = format_datetime(utcnow() + timedelta(seconds=10), usegmt=True)
    receiver.status, receiver.retry_after = 503, retry_after
    [event_id] = await record(runtime, "message.sent")
    before = utcnow()

    assert await dispatcher.run_once() == 1

    row = await load(runtime, event_id)
    # Without Retry-After the first retry would come after 25-50 ms; with it, after the cap.
    assert row.next_attempt_at >= before + timedelta(seconds=0.3)
    assert row.attempt_count == 1


async def test_a_redirect_is_not_followed(
    runtime: Runtime, dispatcher: WebhookDispatcher, receiver: Receiver
) -> None:
    receiver.status = 307
    [event_id] = await record(runtime, "message.sent")

    assert await dispatcher.run_once() == 1

    row = await load(runtime, event_id)
    assert row.delivered_at is None
    assert row.last_error == "HTTP 307"
    assert len(receiver.received) == 1


async def test_a_slow_receiver_times_out(
    runtime: Runtime, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    settings = runtime.settings.model_copy(update={"webhook_timeout": timedelta(seconds=0.2)})
    dispatcher = WebhookDispatcher(
        dataclasses.replace(runtime, settings=settings), http=http, owner="worker-1"
    )
    receiver.delay = 0.5
    [event_id] = await record(runtime, "message.sent")

    assert await dispatcher.run_once() == 1

    row = await load(runtime, event_id)
    assert row.delivered_at is None
    assert row.last_error in {"ReadTimeout", "TimeoutError"}


async def test_an_unreachable_receiver_gets_the_event_once_it_is_back(
    runtime: Runtime, dispatcher: WebhookDispatcher, receiver: Receiver
) -> None:
    receiver.stop()
    [event_id] = await record(runtime, "mailbox.deactivated")
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        async with asyncio.timeout(10):
            down = await wait_for_row(runtime, event_id, lambda row: row.attempt_count >= 1)
            assert down.delivered_at is None
            assert down.last_error == "ConnectError"

            await asyncio.to_thread(receiver.start)
            row = await wait_for_row(runtime, event_id, lambda row: row.delivered_at is not None)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)

    [delivery] = receiver.delivered(event_id)
    assert delivery.signature_valid
    assert row.attempt_count >= 1
    assert row.lease_until is None


def test_signature_format_and_verification() -> None:
    secret, body = SECRET.encode(), b'{"id":"1"}'
    header = signature_header(secret, body, timestamp=1_700_000_000)

    expected = hmac.new(secret, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify_signature(secret, body, header, now=1_700_000_100)

    assert not verify_signature(secret, b'{"id":"2"}', header, now=1_700_000_100)
    assert not verify_signature(b"another-secret", body, header, now=1_700_000_100)
    assert not verify_signature(secret, body, header, now=1_700_000_301)
    assert not verify_signature(
        secret, body, header.replace("t=1700000000", "t=1700000001"), now=1_700_000_100
    )
    assert not verify_signature(secret, body, f"v1={expected}", now=1_700_000_100)
    assert not verify_signature(secret, body, "t=1700000000", now=1_700_000_100)
    assert not verify_signature(secret, body, "garbage", now=1_700_000_100)
    # A second signature (secret rotation) is accepted when one of them matches.
    assert verify_signature(secret, body, header + ",v1=00ff", now=1_700_000_100)


async def test_two_dispatchers_deliver_each_event_once(
    runtime: Runtime, dispatcher: WebhookDispatcher, receiver: Receiver
) -> None:
    ids = await record(runtime, *["message.sent"] * 12)
    receiver.delay = 0.02  # keeps batches in flight so the two dispatchers overlap

    async def drain(worker: WebhookDispatcher) -> int:
        total = 0
        while attempted := await worker.run_once():
            total += attempted
        return total

    async with httpx.AsyncClient(trust_env=False) as other_http:
        other = WebhookDispatcher(runtime, http=other_http, owner="worker-2")
        async with asyncio.timeout(10):
            first, second = await asyncio.gather(drain(dispatcher), drain(other))

    assert first + second == 12
    assert Counter(d.event_id for d in receiver.received) == {str(i): 1 for i in ids}
    async with runtime.sessionmaker() as session:
        rows = (await session.scalars(select(Event))).all()
    assert all(row.delivered_at is not None for row in rows)


async def test_a_leased_event_waits_until_its_lease_expires(
    runtime: Runtime, dispatcher: WebhookDispatcher, receiver: Receiver
) -> None:
    leased, expired = await record(runtime, "message.sent", "message.sent")
    async with runtime.sessionmaker.begin() as session:
        (await session.get_one(Event, leased)).lease_until = utcnow() + timedelta(minutes=1)
        (await session.get_one(Event, expired)).lease_until = utcnow() - timedelta(seconds=1)

    assert await dispatcher.run_once() == 1

    assert [d.event_id for d in receiver.received] == [str(expired)]
    assert (await load(runtime, leased)).delivered_at is None


async def test_without_a_webhook_url_nothing_is_sent(
    runtime: Runtime, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    settings = runtime.settings.model_copy(update={"webhook_url": None})
    dispatcher = WebhookDispatcher(
        dataclasses.replace(runtime, settings=settings), http=http, owner="worker-1"
    )
    [event_id] = await record(runtime, "message.sent")

    assert await dispatcher.run_once() == 0

    row = await load(runtime, event_id)
    assert row.delivered_at is None
    assert row.lease_until is None
    assert receiver.received == []


def _event(*, age: timedelta, delivered_ago: timedelta | None) -> Event:
    now = utcnow()
    return Event(
        type="message.sent",
        tenant_id="acme",
        data={},
        created_at=now - age,
        next_attempt_at=now - age,
        delivered_at=None if delivered_ago is None else now - delivered_ago,
    )


async def test_prune_deletes_only_events_delivered_over_a_week_ago(
    runtime: Runtime, dispatcher: WebhookDispatcher
) -> None:
    old = _event(age=timedelta(days=10), delivered_ago=timedelta(days=8))
    recent = _event(age=timedelta(days=10), delivered_ago=timedelta(days=6))
    pending = _event(age=timedelta(days=10), delivered_ago=None)
    async with runtime.sessionmaker.begin() as session:
        session.add_all([old, recent, pending])

    assert await dispatcher.prune() == 1

    async with runtime.sessionmaker() as session:
        remaining = set((await session.scalars(select(Event.id))).all())
    assert remaining == {recent.id, pending.id}


async def test_run_prunes_old_delivered_events(
    runtime: Runtime, dispatcher: WebhookDispatcher
) -> None:
    old = _event(age=timedelta(days=10), delivered_ago=timedelta(days=8))
    async with runtime.sessionmaker.begin() as session:
        session.add(old)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        async with asyncio.timeout(5):
            while True:
                async with runtime.sessionmaker() as session:
                    if await session.get(Event, old.id) is None:
                        break
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
