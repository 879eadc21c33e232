"""The delivery worker: claim due messages, send them with no transaction open, record the outcome.

    claim     one short transaction: pick due rows (FOR UPDATE SKIP LOCKED on PostgreSQL), keep
              each sender within its concurrency cap and rate, lease the rows, commit
    deliver   build the message for its current route and send it through a pooled sender
    record    one short transaction: an attempt row, the message's next state, the mailbox's
              (deactivation, failing-since), events; only while this worker still holds the lease

An expired lease makes a row claimable again, so a killed worker loses nothing; such a row's
earlier attempt is recorded as `unknown` and retried with the same Message-ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import math
import os
import socket
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.errors import RelayError
from app.mailboxes.models import Mailbox, MailboxStatus, Provider
from app.mailboxes.service import build_sender
from app.outbox.deactivation import deactivate_mailbox
from app.outbox.decisions import AttemptState, Decision, Limits, decide
from app.outbox.models import (
    Message,
    MessageAttempt,
    MessageKind,
    MessageStatus,
    Outcome,
    SendLimit,
    Via,
)
from app.outbox.pool import SenderPool
from app.outbox.retry import RetryPolicy
from app.outbox.routing import DEFAULT_ROUTE_KEY, Route, choose_route, outgoing_message
from app.runtime import Runtime
from app.senders.base import AppConfigError, Sender, SendError, SendResult, TransientError
from app.senders.eml import EmlFileSender
from app.senders.smtp import SmtpConfig, SmtpSender
from app.webhooks.delivery import WebhookDispatcher, prune_delivered_events
from app.webhooks.service import record_event

log = logging.getLogger(__name__)

IDLE_CONNECTION_SECONDS = 60.0
PRUNE_EVERY_SECONDS = 3600.0
SHUTDOWN_GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class Claim:
    """A message this worker leased, and whether an earlier lease on it had expired.

    `lease` names this claim alone (`<owner>#<n>`): an outcome is recorded only under the lease
    it was sent under, so a slow send whose row was claimed again cannot overwrite the newer one.
    """

    id: uuid.UUID
    route_key: str
    reclaimed: bool
    lease: str
    previous_route: str | None = None  # the sender the expired lease was sending through


def worker_name() -> str:
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """Delivers the outbox; many may run at once, in one process or many."""

    def __init__(self, runtime: Runtime, *, owner: str | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.owner = owner or worker_name()
        self.pool = SenderPool()
        self.policy = RetryPolicy(self.settings.retry_base, self.settings.retry_max)
        self.limits = Limits(
            retry_window=self.settings.mailbox_retry_window,
            broken_after=self.settings.mailbox_broken_after,
            max_age=self.settings.message_max_age,
        )
        self._free = self.settings.worker_concurrency
        self._tasks: set[asyncio.Task[None]] = set()
        self._claims = itertools.count(1)
        self._active_leases: Counter[str] = Counter()

    # -- the loop

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set, then finish what is in flight (bounded) and close."""
        log.info(
            "worker started",
            extra={"owner": self.owner, "default_sender": self._describe_default()},
        )
        webhooks = await self._start_webhooks(stop)
        last_reap = asyncio.get_running_loop().time()
        wakeup = self.runtime.outbox_wakeup
        try:
            last_prune = -PRUNE_EVERY_SECONDS
            while not stop.is_set():
                try:
                    started = await self._claim_and_start()
                except Exception:  # the database is away: keep the worker, try again soon
                    log.exception("claiming failed", extra={"owner": self.owner})
                    started = 0
                now = asyncio.get_running_loop().time()
                if now - last_reap > IDLE_CONNECTION_SECONDS / 2:
                    await self.pool.close_idle(IDLE_CONNECTION_SECONDS)
                    last_reap = now
                if webhooks is None and now - last_prune > PRUNE_EVERY_SECONDS:
                    # With webhooks on, their dispatcher prunes; without, events pile up here.
                    last_prune = now
                    with contextlib.suppress(Exception):
                        await prune_delivered_events(self.runtime)
                if started:
                    continue
                wakeup.clear()
                waiters: list[asyncio.Future[Any]] = [
                    asyncio.ensure_future(stop.wait()),
                    asyncio.ensure_future(wakeup.wait()),
                ]
                if self._tasks:  # a finished send frees a slot, maybe under a sender's cap
                    waiters.append(
                        asyncio.ensure_future(
                            asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
                        )
                    )
                await asyncio.wait(
                    waiters,
                    timeout=self.settings.worker_poll_interval.total_seconds(),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for waiter in waiters:
                    waiter.cancel()
        finally:
            await self._shutdown()
            if webhooks is not None:
                await webhooks
            log.info("worker stopped", extra={"owner": self.owner})

    async def run_until_empty(self) -> None:
        """Deliver until no message is queued or sending any more (tests and benchmarks)."""
        poll = self.settings.worker_poll_interval.total_seconds()
        while True:
            started = await self._claim_and_start()
            if self._tasks:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            elif not started:
                if not await self._outbox_has_work():
                    return
                await asyncio.sleep(poll)

    async def _outbox_has_work(self) -> bool:
        async with self.runtime.sessionmaker() as session:
            pending = await session.scalar(
                select(Message.id)
                .where(Message.status.in_([MessageStatus.QUEUED, MessageStatus.SENDING]))
                .limit(1)
            )
        return pending is not None

    async def aclose(self) -> None:
        await self._shutdown()

    async def _claim_and_start(self) -> int:
        if self._free == 0:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        limit = min(self.settings.worker_batch_size, self._free)
        claims = await self.claim(limit)
        for claim in claims:
            self._free -= 1
            self._active_leases[claim.lease] += 1
            task = asyncio.create_task(self._deliver_guarded(claim))
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._done, claim.lease))
        return len(claims)

    def _done(self, lease: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._free += 1
        self._active_leases[lease] -= 1
        if self._active_leases[lease] <= 0:
            del self._active_leases[lease]

    async def _shutdown(self) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=SHUTDOWN_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
                await self._release_leases()
        await self.pool.aclose()

    async def _release_leases(self) -> None:
        """Hand back what this worker still holds, to be retried at once elsewhere.

        Their sends were cut off mid-way: each gets an `unknown` attempt, as it may have gone.
        """
        async with self.runtime.sessionmaker.begin() as session:
            mine = Message.lease_owner.startswith(f"{self.owner}#", autoescape=True)
            held = await session.execute(
                select(Message.id, Message.route_key).where(
                    Message.status == MessageStatus.SENDING, mine
                )
            )
            for message_id, route_key in held:
                session.add(
                    MessageAttempt(
                        message_id=message_id,
                        via=Via.DEFAULT if route_key == DEFAULT_ROUTE_KEY else Via.MAILBOX,
                        outcome=Outcome.UNKNOWN,
                        code="worker_stopped",
                        detail="the worker stopped while sending; it may have been sent",
                    )
                )
            await session.execute(
                update(Message)
                .where(Message.status == MessageStatus.SENDING, mine)
                .values(status=MessageStatus.QUEUED, lease_until=None, lease_owner=None)
            )

    async def _start_webhooks(self, stop: asyncio.Event) -> asyncio.Task[None] | None:
        if self.settings.webhook_url is None:
            return None

        async def run() -> None:
            timeout = self.settings.webhook_timeout.total_seconds()
            async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http:
                await WebhookDispatcher(self.runtime, http=http, owner=self.owner).run(stop)

        return asyncio.create_task(run())

    # -- claim

    async def claim(self, limit: int) -> list[Claim]:
        """Lease up to `limit` due messages, within every sender's concurrency cap and rate."""
        if limit <= 0:
            return []
        now = utcnow()
        lease_until = now + self.settings.worker_lease
        lease = f"{self.owner}#{next(self._claims)}"
        async with self.runtime.sessionmaker.begin() as session:
            columns = (
                Message.id,
                Message.tenant_id,
                Message.kind,
                Message.force_default,
                Message.route_key,
            )
            expired = (
                await session.execute(
                    select(*columns)
                    .where(
                        Message.status == MessageStatus.SENDING,
                        Message.lease_until < now,
                        # Never our own sends that are merely slow: that would send them twice.
                        Message.lease_owner.not_in(list(self._active_leases) or [""]),
                    )
                    .order_by(Message.lease_until)
                    .limit(limit)
                    .with_for_update(skip_locked=True, of=Message)
                )
            ).all()
            due = (
                await session.execute(
                    select(*columns)
                    .where(Message.status == MessageStatus.QUEUED, Message.next_attempt_at <= now)
                    .order_by(Message.next_attempt_at)
                    .limit(limit * 2)
                    .with_for_update(skip_locked=True, of=Message)
                )
            ).all()
            if not expired and not due:
                return []
            rows = [(row, True) for row in expired] + [(row, False) for row in due]
            previous = {row.id: row.route_key for row in expired}
            tenants = {row.tenant_id for row, _ in rows}
            active = {
                tenant_id: (mailbox_id, provider)
                for mailbox_id, tenant_id, provider in await session.execute(
                    select(Mailbox.id, Mailbox.tenant_id, Mailbox.provider).where(
                        Mailbox.tenant_id.in_(tenants), Mailbox.status == MailboxStatus.ACTIVE
                    )
                )
            }
            groups: dict[str, list[tuple[uuid.UUID, bool]]] = defaultdict(list)
            rates: dict[str, int | None] = {DEFAULT_ROUTE_KEY: None}
            for row, reclaimed in rows:
                mailbox = active.get(row.tenant_id)
                if mailbox is None or row.force_default or row.kind == MessageKind.NOTIFICATION:
                    key = DEFAULT_ROUTE_KEY
                else:
                    key = f"mailbox:{mailbox[0]}"
                    rates[key] = self._rate(mailbox[1])
                groups[key].append((row.id, reclaimed))

            claims: list[Claim] = []
            dialect = self.runtime.engine.dialect.name
            # Sorted, so that two workers lock the senders' rows in the same order.
            for key in sorted(groups):
                members = groups[key]
                is_default = key == DEFAULT_ROUTE_KEY
                rate = rates[key]
                # The sender's row is the lock that makes the cap and the rate hold across
                # workers: the in-flight count below is read while holding it.
                bucket = await _lock_sender(session, dialect, key, rate, now)
                cap = (
                    self.settings.default_concurrency
                    if is_default
                    else self.settings.mailbox_concurrency
                )
                inflight = await session.scalar(
                    select(func.count())
                    .select_from(Message)
                    .where(
                        Message.status == MessageStatus.SENDING,
                        Message.route_key == key,
                        Message.lease_until >= now,
                    )
                )
                allowed = max(0, cap - (inflight or 0))
                allowed = min(allowed, limit - len(claims))
                if rate is not None:
                    allowed = _take_tokens(bucket, allowed, rate, now)
                taken, blocked = members[:allowed], members[allowed:]
                if taken:
                    await session.execute(
                        update(Message)
                        .where(Message.id.in_([message_id for message_id, _ in taken]))
                        .values(
                            status=MessageStatus.SENDING,
                            lease_owner=lease,
                            lease_until=lease_until,
                            route_key=key,
                        )
                        .execution_options(synchronize_session=False)
                    )
                    claims.extend(
                        Claim(i, key, reclaimed, lease, previous.get(i)) for i, reclaimed in taken
                    )
                for message_id, reclaimed in blocked:
                    if reclaimed:  # its lease ran out mid-send: it may have gone already
                        session.add(_lost_attempt(message_id, previous.get(message_id)))
                if blocked and not is_default:
                    # Push them back a little, so that the rows of other tenants behind them get
                    # their turn. (The default sender serves everyone: its rows just wait.)
                    out_of_tokens = rate is not None and bucket.tokens < 1
                    wait = 60.0 / rate if rate is not None and out_of_tokens else 0.2
                    await session.execute(
                        update(Message)
                        .where(Message.id.in_([message_id for message_id, _ in blocked]))
                        .values(
                            status=MessageStatus.QUEUED,
                            next_attempt_at=now + timedelta(seconds=wait),
                            lease_owner=None,
                            lease_until=None,
                        )
                        .execution_options(synchronize_session=False)
                    )
        return claims

    def _rate(self, provider: str | None) -> int:
        """Sends a minute one mailbox may make, by how it is connected."""
        if provider == Provider.GOOGLE:
            return self.settings.google_rate_per_minute
        if provider == Provider.MICROSOFT:
            return self.settings.microsoft_rate_per_minute
        return self.settings.smtp_rate_per_minute

    # -- deliver

    async def _deliver_guarded(self, claim: Claim) -> None:
        try:
            await self.deliver(claim)
        except Exception:
            log.exception("delivery crashed", extra={"message_id": str(claim.id)})
            with contextlib.suppress(Exception):
                await self._requeue_after_crash(claim)

    async def deliver(self, claim: Claim) -> None:
        async with self.runtime.sessionmaker() as session:
            message = await session.scalar(
                select(Message).where(
                    Message.id == claim.id,
                    Message.status == MessageStatus.SENDING,
                    Message.lease_owner == claim.lease,
                )
            )
            if message is None:
                return  # cancelled or taken over meanwhile
            await session.refresh(message, ["payload"])
            mailbox = await session.scalar(
                select(Mailbox).where(Mailbox.tenant_id == message.tenant_id)
            )
        if claim.reclaimed:
            await self._record_lost_attempt(message, claim.previous_route)
        payload_reply_to = json.loads(message.payload).get("reply_to")
        route = choose_route(
            mailbox=mailbox,
            settings=self.settings,
            reply_to=payload_reply_to,
            force_default=message.force_default,
            kind=message.kind,
        )
        outgoing = outgoing_message(message, route)
        result: SendResult | SendError
        try:
            async with self._sender(route, mailbox) as sender:
                result = await sender.send(outgoing)
        except SendError as exc:
            result = exc
        await self.record(message, route, mailbox, result, lease=claim.lease)

    @contextlib.asynccontextmanager
    async def _sender(self, route: Route, mailbox: Mailbox | None) -> AsyncIterator[Sender]:
        if route.via == Via.MAILBOX and mailbox is not None:
            async with self.pool.lease(
                route.key,
                version=mailbox.settings_version,
                factory=_mailbox_factory(mailbox, self.runtime),
                size=self.settings.mailbox_concurrency,
            ) as sender:
                yield sender
        else:
            async with self.pool.lease(
                DEFAULT_ROUTE_KEY,
                version=0,
                factory=self._default_sender,
                size=self.settings.default_concurrency,
            ) as sender:
                yield sender

    def _default_sender(self) -> Sender:
        url = self.settings.default_smtp_url
        if url is None:
            return EmlFileSender(self.settings.var_dir / "mail")
        return SmtpSender(
            SmtpConfig.from_url(url.get_secret_value()),
            tls_context=self.runtime.tls_context,
            timeout=self.settings.smtp_timeout.total_seconds(),
        )

    def _describe_default(self) -> str:
        url = self.settings.default_smtp_url
        if url is None:
            return f"eml files in {self.settings.var_dir / 'mail'}"
        config = SmtpConfig.from_url(url.get_secret_value())
        return f"smtp {config.host}:{config.port} ({config.security})"

    # -- record

    async def record(
        self,
        message: Message,
        route: Route,
        mailbox: Mailbox | None,
        result: SendResult | SendError,
        *,
        lease: str,
    ) -> None:
        now = utcnow()
        state = AttemptState(
            via=route.via,
            failures=message.attempt_count,
            created_at=message.created_at,
            message_failing_since=message.mailbox_failing_since,
            mailbox_failing_since=mailbox.failing_since if mailbox else None,
        )
        decision = decide(result, state, now=now, policy=self.policy, limits=self.limits)
        if isinstance(result, SendError):
            log.info(
                "attempt %s",
                decision.outcome,
                extra={"message_id": str(message.id), "via": route.via, "code": result.code},
            )
        async with self.runtime.sessionmaker.begin() as session:
            session.add(
                MessageAttempt(
                    message_id=message.id,
                    at=now,
                    via=route.via,
                    outcome=decision.outcome,
                    code=decision.code,
                    detail=decision.detail,
                )
            )
            current = await session.scalar(
                select(Message)
                .where(
                    Message.id == message.id,
                    Message.status == MessageStatus.SENDING,
                    Message.lease_owner == lease,
                )
                .with_for_update()
            )
            if current is None:
                log.warning(
                    "lease lost before the outcome was recorded",
                    extra={"message_id": str(message.id)},
                )
                return
            self._apply(current, decision, route, now)
            if route.via == Via.MAILBOX and mailbox is not None:
                await self._apply_to_mailbox(session, mailbox, decision, result)
            if current.kind == MessageKind.API and current.status in (
                MessageStatus.SENT,
                MessageStatus.FAILED,
            ):
                self._record_final_event(session, current, decision)

    def _apply(self, message: Message, decision: Decision, route: Route, now: datetime) -> None:
        message.attempt_count += 1
        message.status = decision.status
        message.lease_owner = None
        message.lease_until = None
        message.updated_at = now
        if decision.reroute:
            message.force_default = True
            message.mailbox_failing_since = None
        else:
            message.mailbox_failing_since = decision.message_failing_since
        if decision.retry_at is not None:
            message.next_attempt_at = decision.retry_at
        if decision.pending_recipients is not None:
            message.pending_recipients = decision.pending_recipients
        if decision.status == MessageStatus.SENT or decision.pending_recipients is not None:
            message.via = route.via
            message.from_header = str(route.sender.header())
            message.reply_to_header = str(route.reply_to.header()) if route.reply_to else None
        if decision.status == MessageStatus.SENT:
            message.sent_at = now

    async def _apply_to_mailbox(
        self,
        session: AsyncSession,
        mailbox: Mailbox,
        decision: Decision,
        result: SendResult | SendError,
    ) -> None:
        if decision.deactivate:
            code = result.code if isinstance(result, SendError) else "mailbox_broken"
            detail = result.detail if isinstance(result, SendError) else ""
            if isinstance(result, TransientError) and result.connection_failure:
                detail = f"{detail} (failing for more than {self.limits.broken_after})"
            await deactivate_mailbox(
                session,
                self.settings,
                mailbox_id=mailbox.id,
                settings_version=mailbox.settings_version,
                code=code,
                detail=detail,
            )
        elif decision.mailbox_failing_since != mailbox.failing_since:
            await session.execute(
                update(Mailbox)
                .where(
                    Mailbox.id == mailbox.id, Mailbox.settings_version == mailbox.settings_version
                )
                .values(failing_since=decision.mailbox_failing_since)
                .execution_options(synchronize_session=False)
            )

    def _record_final_event(
        self, session: AsyncSession, message: Message, decision: Decision
    ) -> None:
        sent = message.status == MessageStatus.SENT
        record_event(
            session,
            type="message.sent" if sent else "message.failed",
            tenant_id=message.tenant_id,
            data={
                "message_id": str(message.id),
                "message_id_header": message.message_id_header,
                "via": message.via,
                "metadata": message.meta,
                **({} if sent else {"code": decision.code, "detail": decision.detail}),
            },
            deliver=self.settings.webhook_url is not None,
        )

    async def _record_lost_attempt(self, message: Message, route_key: str | None) -> None:
        async with self.runtime.sessionmaker.begin() as session:
            session.add(_lost_attempt(message.id, route_key))

    async def _requeue_after_crash(self, claim: Claim) -> None:
        async with self.runtime.sessionmaker.begin() as session:
            await session.execute(
                update(Message)
                .where(Message.id == claim.id, Message.lease_owner == claim.lease)
                .values(
                    status=MessageStatus.QUEUED,
                    lease_owner=None,
                    lease_until=None,
                    next_attempt_at=utcnow() + self.policy.delay(1),
                )
            )


def _lost_attempt(message_id: uuid.UUID, route_key: str | None) -> MessageAttempt:
    return MessageAttempt(
        message_id=message_id,
        via=Via.DEFAULT if route_key in (None, DEFAULT_ROUTE_KEY) else Via.MAILBOX,
        outcome=Outcome.UNKNOWN,
        code="lease_expired",
        detail="the worker sending it stopped; it may have been sent",
    )


def _mailbox_factory(mailbox: Mailbox, runtime: Runtime) -> Callable[[], Sender]:
    def build() -> Sender:
        try:
            return build_sender(mailbox, runtime)
        except RelayError as exc:  # the stored secret cannot be read: the operator's problem
            raise AppConfigError(exc.code, exc.detail) from exc

    return build


def _capacity(rate_per_minute: int | None) -> float:
    # Ten seconds' worth of burst; no rate, no bucket (the row is then only a lock).
    return max(1.0, rate_per_minute / 6) if rate_per_minute else 0.0


async def _lock_sender(
    session: AsyncSession, dialect: str, key: str, rate_per_minute: int | None, now: datetime
) -> SendLimit:
    """The sender's shared row, locked until the claim commits (made on first use)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    await session.execute(
        insert(SendLimit)
        .values(key=key, tokens=_capacity(rate_per_minute), updated_at=now)
        .on_conflict_do_nothing(index_elements=["key"])
    )
    bucket = await session.scalar(select(SendLimit).where(SendLimit.key == key).with_for_update())
    assert bucket is not None  # noqa: S101 (just upserted)
    return bucket


def _take_tokens(bucket: SendLimit, wanted: int, rate_per_minute: int, now: datetime) -> int:
    """Take up to `wanted` sends from the sender's token bucket."""
    capacity = _capacity(rate_per_minute)
    elapsed = max(0.0, (now - bucket.updated_at).total_seconds())
    tokens = min(capacity, bucket.tokens + elapsed * rate_per_minute / 60)
    taken = min(wanted, math.floor(tokens))
    bucket.tokens = tokens - taken
    bucket.updated_at = now
    return taken
