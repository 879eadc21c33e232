"""Backlog: worker throughput with 100,000 queued vs 1,000 queued, and the worker's peak RSS.

    python -m bench.backlog [--database-url postgresql+asyncpg://…|sqlite] [--deliveries 1000]

For each backlog size a fresh scratch database gets that many due messages by bulk insert
(core `insert()` executemany, then ANALYZE, as autovacuum would have done for a real backlog).
Then `python -m app.cli worker` (the production worker process) delivers to an SMTP sink in its
own process until `--deliveries` messages are sent; the rate is taken from the `sent_at` of the
first and the last of them. The worker's peak RSS is VmHWM from /proc/<pid>/status, read just
before it is stopped. Targets: rate(100k) ≥ 0.9 x rate(1k); peak RSS ≤ 150 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.db.base import utcnow
from app.db.migrations import upgrade
from app.outbox.models import Message, MessageAttempt, MessageKind, MessageStatus
from app.outbox.routing import encode_payload
from app.runtime import Runtime
from app.senders.message import make_message_id
from app.settings import Settings
from bench.common import (
    HTML,
    TENANT,
    TEXT,
    CpuMeter,
    Sink,
    Verdict,
    add_database_argument,
    backend,
    bench_settings,
    exit_cleanly_on_sigterm,
    finish,
    print_machine,
    print_table,
    repo_root,
    scratch_database,
    settings_env,
    workdir,
)

RATIO_TARGET = 0.9
RSS_TARGET_MB = 150.0
CHUNK = 5000


@dataclass
class Case:
    queued: int
    delivered: int
    seconds: float
    insert_seconds: float
    peak_rss_mb: float
    cpu: str
    worker_ms: float  # worker CPU per delivered message over the whole run
    note: str = ""

    @property
    def rate(self) -> float:
        return (self.delivered - 1) / self.seconds if self.seconds else 0.0


def rows(settings: Settings, start: int, stop: int, now: Any) -> list[dict[str, Any]]:
    """Queued messages as `enqueue_message` stores them for a tenant without a mailbox."""
    sender = f'"{settings.default_from_name}" <{settings.default_from}>'
    domain = settings.default_from.rpartition("@")[2]
    payload = encode_payload(
        {
            "cc": [],
            "bcc": [],
            "text": TEXT,
            "html": HTML,
            "reply_to": None,
            "attachments": [],
            "headers": {},
        }
    )
    result = []
    for i in range(start, stop):
        # Older first, a millisecond apart: the claim takes them in this order.
        at = now - timedelta(milliseconds=stop - i)
        result.append(
            {
                "id": uuid.uuid4(),
                "tenant_id": TENANT,
                "kind": MessageKind.API.value,
                "status": MessageStatus.QUEUED.value,
                "force_default": False,
                "message_id_header": make_message_id(domain),
                "subject": f"Your leave request #{i} was approved",
                "from_header": sender,
                "to": [f"employee{i}@acme.example"],
                "payload": payload,
                "size_bytes": len(TEXT) + len(HTML) + 2048,
                "meta": {"request_id": i},
                "request_hash": uuid.uuid4().hex,
                "attempt_count": 0,
                "next_attempt_at": at,
                "created_at": at,
                "updated_at": at,
            }
        )
    return result


async def fill(settings: Settings, queued: int) -> float:
    runtime = Runtime.create(settings)
    started = time.perf_counter()
    try:
        now = utcnow()
        statement = insert(Message.__table__)  # type: ignore[arg-type]
        for start in range(0, queued, CHUNK):
            async with runtime.engine.begin() as connection:
                batch = rows(settings, start, min(queued, start + CHUNK), now)
                await connection.execute(statement, batch)
        async with runtime.engine.connect() as connection:
            if settings.is_sqlite:
                await connection.execute(text("ANALYZE"))
            else:
                await (await connection.execution_options(isolation_level="AUTOCOMMIT")).execute(
                    text("VACUUM ANALYZE messages")
                )
    finally:
        await runtime.aclose()
    return time.perf_counter() - started


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def sent_times(settings: Settings, limit: int) -> tuple[int, float]:
    """How many are sent, and the seconds between the first and the `limit`-th `sent_at`."""
    runtime = Runtime.create(settings)
    try:
        async with runtime.sessionmaker() as session:
            count = int(
                await session.scalar(
                    select(func.count()).where(Message.status == MessageStatus.SENT)
                )
                or 0
            )
            times = list(
                await session.scalars(
                    select(Message.sent_at)
                    .where(Message.status == MessageStatus.SENT)
                    .order_by(Message.sent_at)
                    .limit(limit)
                )
            )
    finally:
        await runtime.aclose()
    stamps = [t for t in times if t is not None]
    if len(stamps) < 2:
        return count, 0.0
    return count, (stamps[-1] - stamps[0]).total_seconds()


async def count_attempts(engine: AsyncEngine) -> int:
    """Progress, read cheaply: the attempts table holds only what this run delivered."""
    async with engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(MessageAttempt)) or 0)


async def deliver(
    settings: Settings, deliveries: int, bound: float, log: Path, sink: Sink
) -> tuple[float, CpuMeter, float, str]:
    """Run `mailrelay worker` until `deliveries` are sent; (peak RSS MB, CPU, seconds, note)."""
    # A plain engine, not the app's: on SQLite the app begins every transaction IMMEDIATE, and
    # polling through it would queue for the write lock behind the worker.
    engine = create_async_engine(settings.database_url, pool_size=1, max_overflow=0)
    note = ""
    with log.open("w") as output:
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.cli",
            "worker",
            env=settings_env(settings),
            cwd=repo_root(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        meter = CpuMeter(
            {"worker": worker.pid, "sink": sink.pid, "bench": os.getpid()},
            postgres=not settings.is_sqlite,
        )
        meter.start()
        started = time.perf_counter()
        rss = 0.0
        try:
            while True:
                rss = max(rss, peak_rss_mb(worker.pid))
                if await count_attempts(engine) >= deliveries:
                    break
                if worker.returncode is not None:
                    note = f"worker exited with {worker.returncode}"
                    break
                if time.perf_counter() - started > bound:
                    note = f"stopped after {bound:g} s"
                    break
                await asyncio.sleep(0.2)
            elapsed = time.perf_counter() - started
            meter.stop()
            if worker.returncode is None:
                rss = max(rss, peak_rss_mb(worker.pid))
                worker.send_signal(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(worker.wait(), 60)
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
            await engine.dispose()
    return rss, meter, elapsed, note


def run_case(
    base_url: str, directory: Path, queued: int, args: argparse.Namespace, sink: Sink
) -> Case:
    with scratch_database(base_url, directory, label=f"backlog{queued}") as url:
        upgrade(url)
        settings = bench_settings(url, directory, default_smtp_url=sink.url)
        insert_seconds = asyncio.run(fill(settings, queued))
        print(f"  {queued} queued in {insert_seconds:.1f} s; delivering {args.deliveries}…")
        log = directory / f"worker{queued}.log"
        rss, meter, elapsed, note = asyncio.run(
            deliver(settings, args.deliveries, args.timeout, log, sink)
        )
        delivered, seconds = asyncio.run(sent_times(settings, args.deliveries))
    worker_ms = 1000 * meter.spent["worker"] / delivered if delivered else 0.0
    return Case(
        queued,
        min(delivered, args.deliveries),
        seconds,
        insert_seconds,
        rss,
        meter.describe(elapsed),
        worker_ms,
        note,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_database_argument(parser)
    parser.add_argument("--small", type=int, default=1000, help="the reference backlog")
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--deliveries", type=int, default=1000, help="measured in each case")
    parser.add_argument("--timeout", type=float, default=60, help="bound per case")
    args = parser.parse_args(argv)
    if args.deliveries > args.small:
        parser.error("--deliveries must not exceed --small")

    exit_cleanly_on_sigterm()
    print_machine()
    print(
        f"backlog: {args.large} vs {args.small} queued, rate over the first {args.deliveries}"
        f" deliveries, `mailrelay worker` process, {backend(args.database_url)}"
    )
    with workdir() as directory, Sink() as sink:
        small = run_case(args.database_url, directory, args.small, args, sink)
        large = run_case(args.database_url, directory, args.large, args, sink)
        sink.stop()

    print()
    print_table(
        [
            "queued",
            "delivered",
            "seconds",
            "msgs/s",
            "worker CPU ms/msg",
            "peak RSS MB",
            "insert s",
            "CPU (share of one core)",
            "note",
        ],
        [
            [
                c.queued,
                c.delivered,
                f"{c.seconds:.2f}",
                f"{c.rate:.0f}",
                f"{c.worker_ms:.1f}",
                f"{c.peak_rss_mb:.0f}",
                f"{c.insert_seconds:.1f}",
                c.cpu,
                c.note,
            ]
            for c in (small, large)
        ],
    )
    ratio = large.rate / small.rate if small.rate else 0.0
    if large.worker_ms:
        cost = small.worker_ms / large.worker_ms
        print(f"\nCPU-cost ratio (worker CPU/msg, small ÷ large): {cost:.2f}")
    name = backend(args.database_url)
    verdicts = [
        Verdict(f"backlog {name}: rate {args.large} / rate {args.small}", ratio, RATIO_TARGET),
        Verdict(
            f"backlog {name}: worker peak RSS MB",
            max(small.peak_rss_mb, large.peak_rss_mb),
            RSS_TARGET_MB,
            higher_is_better=False,
        ),
    ]
    if small.delivered < args.deliveries or large.delivered < args.deliveries:
        print(f"\nnot all {args.deliveries} deliveries happened within the time bound")
        verdicts.append(Verdict("deliveries completed", 0, 1))
    return finish(verdicts)


if __name__ == "__main__":
    sys.exit(main())
