"""Webhook delivery: claim due events, POST them signed with no transaction open, record outcomes.

A receiver checks `Mailrelay-Signature: t=<unix>,v1=<hex>` by computing
HMAC-SHA256(secret, "<t>." + raw body), comparing it in constant time with each `v1`, and
refusing a `t` too far from its own clock (see `verify_signature`). Delivery is at least once:
receivers deduplicate on `Mailrelay-Event-Id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, cast

import httpx
from sqlalchemy import CursorResult, delete, or_, select, update

from app.db.base import utcnow
from app.outbox.retry import RetryPolicy
from app.runtime import Runtime
from app.webhooks.models import Event

logger = logging.getLogger(__name__)

PRUNE_AFTER = timedelta(days=7)
PRUNE_EVERY = timedelta(hours=1)


def _digest(secret: bytes, body: bytes, timestamp: int) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: bytes, body: bytes, *, timestamp: int) -> str:
    """The `Mailrelay-Signature` value for `body` sent at `timestamp` (Unix seconds)."""
    return f"t={timestamp},v1={_digest(secret, body, timestamp)}"


def verify_signature(
    secret: bytes,
    body: bytes,
    header: str,
    *,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """Whether `header` signs `body` with `secret` and its timestamp is within `tolerance_s`."""
    timestamp: int | None = None
    candidates: list[bytes] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            if not (value.isascii() and value.isdigit()):
                return False
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value.encode())
    if timestamp is None or not candidates:
        return False
    # The timestamp is signed too, so a captured request cannot be replayed once it is stale.
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = _digest(secret, body, timestamp).encode()
    # Several `v1` values are allowed so that a sender can sign with an old and a new secret.
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


def _isoformat(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_body(event: Event) -> bytes:
    """The JSON body POSTed for `event`: `{id, type, created_at, tenant_id, data}`, compact."""
    payload = {
        "id": str(event.id),
        "type": event.type,
        "created_at": _isoformat(event.created_at),
        "tenant_id": event.tenant_id,
        "data": event.data,
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or HTTP-date), None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - utcnow()).total_seconds())


@dataclass(frozen=True)
class _Claimed:
    id: uuid.UUID
    type: str
    attempt_count: int
    lease_until: datetime
    body: bytes


@dataclass(frozen=True)
class _Failure:
    error: str
    retry_after: float | None = None


class WebhookDispatcher:
    """Delivers due events to `settings.webhook_url`; several may run against one database."""

    def __init__(self, runtime: Runtime, *, http: httpx.AsyncClient, owner: str) -> None:
        settings = runtime.settings
        if settings.webhook_url is not None and settings.webhook_secret is None:
            raise ValueError("MAILRELAY_WEBHOOK_SECRET is required with MAILRELAY_WEBHOOK_URL")
        self._runtime = runtime
        self._http = http
        self._owner = owner
        self._url = settings.webhook_url
        self._secret = (
            settings.webhook_secret.get_secret_value().encode() if settings.webhook_secret else b""
        )
        self._timeout = settings.webhook_timeout.total_seconds()
        self._policy = RetryPolicy(base=settings.retry_base, cap=settings.retry_max)
        self._batch_size = settings.worker_batch_size
        self._lease = settings.worker_lease
        self._poll_interval = settings.worker_poll_interval.total_seconds()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set, pruning old delivered events at most once an hour."""
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        while not stop.is_set():
            if loop.time() >= next_prune:
                next_prune = loop.time() + PRUNE_EVERY.total_seconds()
                try:
                    await self.prune()
                except Exception:
                    logger.exception("pruning delivered events failed", extra=self._extra())
            try:
                attempted = await self.run_once()
            except Exception:
                # The database may be briefly unreachable; the loop must outlive that.
                logger.exception("webhook delivery round failed", extra=self._extra())
                attempted = 0
            if attempted == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._poll_interval)

    async def run_once(self) -> int:
        """Claim a batch of due events, POST each once and record the outcomes; how many."""
        if self._url is None:
            return 0
        claimed = await self._claim()
        if not claimed:
            return 0
        results = await asyncio.gather(
            *(self._deliver(self._url, event) for event in claimed), return_exceptions=True
        )
        for event, result in zip(claimed, results, strict=True):
            if isinstance(result, Exception):
                # The lease will expire and the event be retried; nothing is lost.
                logger.error(
                    "recording a webhook outcome failed",
                    exc_info=result,
                    extra=self._extra(event),
                )
            elif isinstance(result, BaseException):
                raise result
        return len(claimed)

    async def prune(self) -> int:
        """Delete events delivered more than seven days ago; how many were deleted."""
        return await prune_delivered_events(self._runtime)

    async def _claim(self) -> list[_Claimed]:
        now = utcnow()
        lease_until = now + self._lease
        async with self._runtime.sessionmaker.begin() as session:
            events = (
                await session.scalars(
                    select(Event)
                    .where(
                        Event.delivered_at.is_(None),
                        Event.next_attempt_at <= now,
                        or_(Event.lease_until.is_(None), Event.lease_until < now),
                    )
                    .order_by(Event.next_attempt_at)
                    .limit(self._batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for event in events:
                event.lease_until = lease_until
            return [
                _Claimed(event.id, event.type, event.attempt_count, lease_until, event_body(event))
                for event in events
            ]

    async def _deliver(self, url: str, event: _Claimed) -> None:
        failure = await self._post(url, event)
        async with self._runtime.sessionmaker.begin() as session:
            if failure is None:
                # Recorded even if our lease lapsed meanwhile: the receiver has it either way.
                await session.execute(
                    update(Event)
                    .where(Event.id == event.id, Event.delivered_at.is_(None))
                    .values(delivered_at=utcnow(), lease_until=None)
                )
                return
            attempts = event.attempt_count + 1
            delay = self._policy.delay(attempts, retry_after=failure.retry_after)
            # Only while the lease is still ours, so a late failure never overwrites the state
            # of a worker that reclaimed the event after the lease expired.
            await session.execute(
                update(Event)
                .where(
                    Event.id == event.id,
                    Event.delivered_at.is_(None),
                    Event.lease_until == event.lease_until,
                )
                .values(
                    attempt_count=attempts,
                    next_attempt_at=utcnow() + delay,
                    last_error=failure.error,
                    lease_until=None,
                )
            )
        logger.warning(
            "webhook delivery failed: %s", failure.error, extra=self._extra(event, attempts)
        )

    async def _post(self, url: str, event: _Claimed) -> _Failure | None:
        headers = {
            "Content-Type": "application/json",
            "Mailrelay-Signature": signature_header(
                self._secret, event.body, timestamp=int(time.time())
            ),
            "Mailrelay-Event-Id": str(event.id),
            "Mailrelay-Event-Type": event.type,
        }
        try:
            # httpx times each phase separately; this bounds the whole request well within
            # the lease, so a trickling receiver cannot cause a second delivery.
            async with asyncio.timeout(self._timeout):
                response = await self._http.post(
                    url,
                    content=event.body,
                    headers=headers,
                    timeout=self._timeout,
                    follow_redirects=False,
                )
        except (httpx.HTTPError, TimeoutError) as exc:
            # The class name only: messages can carry the URL, and the URL may carry credentials.
            return _Failure(type(exc).__name__)
        if response.is_success:
            return None
        return _Failure(
            f"HTTP {response.status_code}", _retry_after(response.headers.get("Retry-After"))
        )

    def _extra(
        self, event: _Claimed | None = None, attempts: int | None = None
    ) -> dict[str, object]:
        extra: dict[str, object] = {"worker": self._owner}
        if event is not None:
            extra["event_id"] = str(event.id)
            extra["event_type"] = event.type
        if attempts is not None:
            extra["attempt"] = attempts
        return extra


async def prune_delivered_events(runtime: Runtime) -> int:
    """Delete events delivered (or recorded without a webhook) more than seven days ago."""
    cutoff = utcnow() - PRUNE_AFTER
    async with runtime.sessionmaker.begin() as session:
        result = await session.execute(
            delete(Event).where(Event.delivered_at.is_not(None), Event.delivered_at < cutoff)
        )
    return cast("CursorResult[Any]", result).rowcount
