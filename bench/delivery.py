"""Delivery: the relay end to end vs a bare aiosmtplib loop, same sink, same connection count.

    python -m bench.delivery [--database-url sqlite|postgresql+asyncpg://…] [--count 2000]

Both sides send `--count` similar messages to one SMTP sink running in its own process. The bare
side is `--connections` aiosmtplib connections each sending in a loop. The relay side enqueues
the messages through `enqueue_message` for a tenant without a mailbox (so they take the default
relay, MAILRELAY_DEFAULT_SMTP_URL = the sink), then one `Worker` drains them with
MAILRELAY_DEFAULT_CONCURRENCY = `--connections`; its rate runs from the first claim to the last
recorded attempt. Target: relay ≥ 0.7 x bare (DESIGN.md).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import time
from dataclasses import dataclass

import aiosmtplib
from sqlalchemy import delete, func, select

from app.db.base import utcnow
from app.db.migrations import upgrade
from app.outbox.models import Message, MessageAttempt, MessageStatus
from app.outbox.schemas import MessageCreate
from app.outbox.service import enqueue_message
from app.outbox.worker import Worker
from app.runtime import Runtime
from app.settings import Settings
from bench.common import (
    BARE_FROM,
    TENANT,
    CpuMeter,
    Sink,
    Verdict,
    add_database_argument,
    backend,
    bare_email,
    bench_settings,
    exit_cleanly_on_sigterm,
    finish,
    message_body,
    print_machine,
    print_table,
    scratch_database,
    workdir,
)

TARGET = 0.7


@dataclass
class Phase:
    name: str
    sent: int
    seconds: float
    cpu: str
    cpu_ms: float  # CPU of the measured process (bench: client or worker) per message
    note: str = ""

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


async def bare_loop(port: int, count: int, connections: int, meter: CpuMeter) -> Phase:
    """`connections` aiosmtplib sessions, each sending messages until `count` have gone."""
    numbers = itertools.count()

    async def connection() -> int:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30)
        await smtp.connect()
        sent = 0
        while (i := next(numbers)) < count:
            await smtp.sendmail(BARE_FROM, [f"employee{i}@acme.example"], bare_email(i))
            sent += 1
        await smtp.quit()
        return sent

    meter.start()
    started = time.perf_counter()
    sent = sum(await asyncio.gather(*(connection() for _ in range(connections))))
    seconds = time.perf_counter() - started
    meter.stop()
    per_message = 1000 * meter.spent.get("bench", 0.0) / sent if sent else 0.0
    return Phase("bare aiosmtplib", sent, seconds, meter.describe(seconds), per_message)


async def enqueue(runtime: Runtime, count: int, *, first: int = 0) -> float:
    started = time.perf_counter()
    batch = 500
    for start in range(first, first + count, batch):
        async with runtime.sessionmaker.begin() as session:
            for i in range(start, min(start + batch, first + count)):
                await enqueue_message(
                    session,
                    runtime.settings,
                    tenant_id=TENANT,
                    body=MessageCreate.model_validate(message_body(i)),
                    idempotency_key=None,
                )
    return time.perf_counter() - started


async def relay(runtime: Runtime, count: int, meter: CpuMeter, bound: float) -> Phase:
    """Drain `count` queued messages with one Worker; rate from first claim to last attempt."""
    worker = Worker(runtime, owner="bench-delivery")
    meter.start()
    started_wall = utcnow()
    started = time.perf_counter()
    note = ""
    try:
        await asyncio.wait_for(worker.run_until_empty(), bound)
    except TimeoutError:
        note = f"stopped after {bound:g} s"
    finally:
        await worker.aclose()
    elapsed = time.perf_counter() - started
    meter.stop()
    async with runtime.sessionmaker() as session:
        sent = await session.scalar(
            select(func.count()).where(Message.status == MessageStatus.SENT)
        )
        last = await session.scalar(select(func.max(MessageAttempt.at)))
        attempts = await session.scalar(select(func.count()).select_from(MessageAttempt))
    seconds = (last - started_wall).total_seconds() if last else elapsed
    if attempts != sent:
        note = f"{note}; {attempts} attempts for {sent} sent".lstrip("; ")
    per_message = 1000 * meter.spent.get("bench", 0.0) / sent if sent else 0.0
    return Phase(
        "relay (Worker)", int(sent or 0), seconds, meter.describe(elapsed), per_message, note
    )


async def run(settings: Settings, sink: Sink, count: int, connections: int, bound: float) -> int:
    meter = CpuMeter({"bench": os.getpid(), "sink": sink.pid}, postgres=not settings.is_sqlite)
    # Warm both paths up (imports, first connections, the sink's code paths); not measured.
    await bare_loop(sink.port, 100, connections, CpuMeter({}))
    bare = await bare_loop(sink.port, count, connections, meter)

    runtime = Runtime.create(settings)
    try:
        warm = Worker(runtime, owner="bench-warmup")
        await enqueue(runtime, 100, first=count)
        await warm.run_until_empty()
        await warm.aclose()
        async with runtime.sessionmaker.begin() as session:
            await session.execute(delete(MessageAttempt))
            await session.execute(delete(Message))
        enqueue_seconds = await enqueue(runtime, count)
        relayed = await relay(runtime, count, meter, bound)
    finally:
        await runtime.aclose()

    counts = sink.stop()["messages"]
    print()
    print_table(
        ["side", "messages", "seconds", "msgs/s", "CPU ms/msg", "CPU (share of one core)", "note"],
        [
            [p.name, p.sent, f"{p.seconds:.2f}", f"{p.rate:.0f}", f"{p.cpu_ms:.1f}", p.cpu, p.note]
            for p in (bare, relayed)
        ],
    )
    print(
        f"\nsink received: bare {counts.get(BARE_FROM, 0) - 100}, relay "
        f"{counts.get(settings.default_from, 0) - 100} (warm-up of 100 each excluded);"
        f" enqueue of {count} took {enqueue_seconds:.2f} s (not in the relay's rate)"
    )
    ok = relayed.sent == count and bare.sent == count
    if not ok:
        print(f"not every message was delivered: bare {bare.sent}, relay {relayed.sent}")
    ratio = relayed.rate / bare.rate if bare.rate else 0.0
    if relayed.cpu_ms:
        # Each side runs in one process and is bound by its CPU when the machine is idle, so
        # the CPU per message predicts the ratio even when neighbours steal time.
        print(f"CPU-cost ratio (bare CPU/msg ÷ relay CPU/msg): {bare.cpu_ms / relayed.cpu_ms:.2f}")
    name = f"delivery {backend(settings.database_url)}: relay/bare"
    return finish([Verdict(name, ratio, TARGET)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_database_argument(parser)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=10, help="default_concurrency")
    parser.add_argument("--timeout", type=float, default=120, help="bound on the relay phase")
    args = parser.parse_args(argv)

    exit_cleanly_on_sigterm()
    print_machine()
    with workdir() as directory, scratch_database(args.database_url, directory) as url:
        upgrade(url)
        with Sink() as sink:
            settings = bench_settings(
                url,
                directory,
                default_smtp_url=sink.url,
                default_concurrency=args.connections,
            )
            print(
                f"delivery: {args.count} messages, {args.connections} connections,"
                f" {backend(url)}, worker batch {settings.worker_batch_size}"
                f" concurrency {settings.worker_concurrency}"
            )
            return asyncio.run(run(settings, sink, args.count, args.connections, args.timeout))


if __name__ == "__main__":
    sys.exit(main())
