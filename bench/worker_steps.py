"""Diagnostic (no target): CPU per message of each step of the worker, one message at a time.

    python -m bench.worker_steps [--database-url …] [--count 500] [--sketch]

Messages go through the real `Worker.claim` (batches of `--batch`) and `Worker.deliver`, one
after another, so that `time.process_time()` (this process, its threads included) can be split
into claim, load (deliver's own queries and routing), build + SMTP send, and record. The bare
client's two steps (build the message, send it) are measured the same way for comparison.

`--sketch` also runs a lean variant written here, not in app/: one query loads a claimed batch
with its payloads, the SMTP session is reused without a NOOP, and the outcomes of a batch are
recorded in one transaction with core statements and no event rows. It shows how much of the
worker's cost those choices account for; it skips the failure handling of `record`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import aiosmtplib
from sqlalchemy import insert, select, update
from sqlalchemy.orm import undefer

from app.db.base import utcnow
from app.db.migrations import upgrade
from app.mailboxes.models import Mailbox
from app.outbox.models import Message, MessageAttempt, MessageStatus, Outcome
from app.outbox.routing import choose_route, outgoing_message
from app.outbox.worker import Claim, Worker
from app.runtime import Runtime
from app.senders.smtp import SmtpSender
from app.settings import Settings
from bench.common import (
    BARE_FROM,
    Sink,
    add_database_argument,
    backend,
    bare_email,
    bench_settings,
    exit_cleanly_on_sigterm,
    print_machine,
    print_table,
    scratch_database,
    workdir,
)
from bench.delivery import enqueue


class Clock:
    """CPU seconds per step; `lap(step)` charges the time since the previous lap."""

    def __init__(self) -> None:
        self.spent: defaultdict[str, float] = defaultdict(float)
        self.last = time.process_time()

    def lap(self, step: str) -> None:
        now = time.process_time()
        self.spent[step] += now - self.last
        self.last = now

    def timed(self, step: str, function: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        """`function`, with its own CPU charged to `step` and not to the enclosing step."""

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            before = time.process_time()
            try:
                return await function(*args, **kwargs)
            finally:
                spent = time.process_time() - before
                self.spent[step] += spent
                self.last += spent  # not charged again to the step around the call

        return wrapper


async def bare(port: int, count: int) -> dict[str, float]:
    clock = Clock()
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await smtp.connect()
    clock.lap("connect")
    for i in range(count):
        data = bare_email(i)
        clock.lap("build the message")
        await smtp.sendmail(BARE_FROM, [f"employee{i}@acme.example"], data)
        clock.lap("SMTP send")
    await smtp.quit()
    return clock.spent


async def current(runtime: Runtime, count: int, batch: int) -> dict[str, float]:
    clock = Clock()
    worker = Worker(runtime, owner="bench-steps")
    worker.record = clock.timed("record", worker.record)  # type: ignore[method-assign]
    original_send = SmtpSender.send
    SmtpSender.send = clock.timed("build + SMTP send", original_send)  # type: ignore[method-assign]
    try:
        done = 0
        while done < count:
            claims = await worker.claim(batch)
            clock.lap("claim")
            if not claims:
                break
            for claim in claims:
                await worker.deliver(claim)
                clock.lap("load + route (deliver minus send and record)")
            done += len(claims)
    finally:
        SmtpSender.send = original_send  # type: ignore[method-assign]
        await worker.aclose()
    return clock.spent


async def sketch(runtime: Runtime, count: int, batch: int) -> dict[str, float]:
    clock = Clock()
    worker = Worker(runtime, owner="bench-steps")
    settings = runtime.settings

    async def connected(self: SmtpSender) -> aiosmtplib.SMTP:
        if self._smtp is None or not self._smtp.is_connected:
            self._smtp = await self._connect()
        return self._smtp

    original = SmtpSender._connected
    SmtpSender._connected = connected  # type: ignore[method-assign]
    try:
        done = 0
        while done < count:
            claims: list[Claim] = await worker.claim(batch)
            clock.lap("claim")
            if not claims:
                break
            async with runtime.sessionmaker() as session:
                messages = list(
                    await session.scalars(
                        select(Message)
                        .options(undefer(Message.payload))
                        .where(
                            Message.id.in_([c.id for c in claims]),
                            Message.lease_owner.in_([c.lease for c in claims]),
                        )
                    )
                )
                tenants = {m.tenant_id for m in messages}
                mailboxes = {
                    m.tenant_id: m
                    for m in await session.scalars(
                        select(Mailbox).where(Mailbox.tenant_id.in_(tenants))
                    )
                }
            clock.lap("load a batch in one query")
            sent = []
            for message in messages:
                mailbox = mailboxes.get(message.tenant_id)
                route = choose_route(
                    mailbox=mailbox,
                    settings=settings,
                    reply_to=json.loads(message.payload).get("reply_to"),
                    force_default=message.force_default,
                    kind=message.kind,
                )
                async with worker._sender(route, mailbox) as sender:
                    await sender.send(outgoing_message(message, route))
                sent.append((message, route))
            clock.lap("build + SMTP send, no NOOP")
            if len(sent) != len(claims):
                raise RuntimeError("the sketch lost track of its claims; app/outbox changed?")
            now = utcnow()
            async with runtime.sessionmaker.begin() as session:
                await session.execute(
                    insert(MessageAttempt),
                    [
                        {"message_id": m.id, "at": now, "via": r.via, "outcome": Outcome.SENT}
                        for m, r in sent
                    ],
                )
                await session.execute(
                    update(Message)
                    .where(
                        Message.id.in_([m.id for m, _ in sent]),
                        Message.status == MessageStatus.SENDING,
                        Message.lease_owner.in_([c.lease for c in claims]),
                    )
                    .values(
                        status=MessageStatus.SENT,
                        sent_at=now,
                        updated_at=now,
                        lease_owner=None,
                        lease_until=None,
                        via=sent[0][1].via,
                        attempt_count=Message.attempt_count + 1,
                    )
                    .execution_options(synchronize_session=False)
                )
            clock.lap("record a batch in one transaction")
            done += len(claims)
    finally:
        SmtpSender._connected = original  # type: ignore[method-assign]
        await worker.aclose()
    return clock.spent


def rows(spent: dict[str, float], count: int) -> list[list[object]]:
    table: list[list[object]] = [[step, f"{1000 * cpu / count:.2f}"] for step, cpu in spent.items()]
    table.append(["total", f"{1000 * sum(spent.values()) / count:.2f}"])
    return table


async def run(settings: Settings, sink: Sink, count: int, batch: int, lean: bool) -> None:
    tables = [("bare aiosmtplib client", await bare(sink.port, count))]
    runtime = Runtime.create(settings)
    try:
        await enqueue(runtime, count)
        label = f"the app's Worker, claims of {batch}"
        tables.append((label, await current(runtime, count, batch)))
        if lean:
            await enqueue(runtime, count, first=count)
            label = f"sketch of a leaner worker (not the app's code), claims of {batch}"
            tables.append((label, await sketch(runtime, count, batch)))
    finally:
        await runtime.aclose()
    for label, spent in tables:
        print(f"\n{label}, one message at a time")
        print_table(["step", "CPU ms/msg"], rows(spent, count))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_database_argument(parser)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--batch", type=int, default=10, help="claim size (default_concurrency)")
    parser.add_argument("--sketch", action="store_true", help="the lean variant too")
    args = parser.parse_args(argv)
    exit_cleanly_on_sigterm()
    print_machine()
    with workdir() as directory, scratch_database(args.database_url, directory) as url:
        upgrade(url)
        with Sink() as sink:
            settings = bench_settings(url, directory, default_smtp_url=sink.url)
            print(f"worker steps: {args.count} messages, {backend(url)}")
            asyncio.run(run(settings, sink, args.count, args.batch, args.sketch))
            sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
