"""Worker processes, killed and stopped for real: a SIGKILL loses nothing and repeats only the
sends it left unanswered, two workers share a backlog, a SIGTERM finishes what is in flight."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import func, select

from app.outbox.models import Message, MessageAttempt, MessageStatus, Outcome
from app.outbox.schemas import MessageCreate
from app.outbox.service import enqueue_message
from app.runtime import Runtime
from tests.conftest import BACKENDS
from tests.fixtures.smtpd import Received, SmtpServer, TLSFiles
from tests.outbox.procs import WorkerProcess, WorkerProcesses, worker_env

# Quick polls and retries. The lease stays the default (2 min) but for the worker a test kills.
FAST = {
    "default_concurrency": "10",  # at most this many in flight at once, across workers
    "worker_poll_interval": "PT0.05S",
    "retry_base": "PT0.05S",
    "retry_max": "PT0.3S",
    "smtp_timeout": "PT5S",
}
# Waits that only fail a broken run; a passing one takes a few seconds.
DEADLINE = 30.0


class Sink(SmtpServer):
    """The default relay, keeping each message `data_delay` seconds before it answers; it counts
    the messages it holds but has not answered yet (the sender does not know they arrived)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.unanswered = 0

    async def handle_DATA(  # noqa: N802 (aiosmtpd hook name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        received = Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            content=envelope.original_content or b"",
            login=None,
        )
        with self._lock:
            self.received.append(received)
            self.unanswered += 1
        try:
            await asyncio.sleep(self.data_delay)
        finally:
            with self._lock:
                self.unanswered -= 1
        return "250 OK"


@pytest.fixture
def default_relay(tls_files: TLSFiles) -> Iterator[Sink]:
    with Sink(security="none", tls=tls_files) as sink:
        yield sink


@pytest.fixture
def workers(runtime: Runtime, default_relay: Sink, tmp_path: Path) -> Iterator[WorkerProcesses]:
    env = worker_env(
        database_url=runtime.settings.database_url,
        smtp_port=default_relay.port,
        var_dir=tmp_path / "var",
        **FAST,
    )
    with WorkerProcesses(env, tmp_path) as processes:
        yield processes
    print(processes.logs())  # pytest shows it when the test failed


async def enqueue(runtime: Runtime, count: int) -> set[str]:
    """`count` messages for a tenant without a mailbox (so for the default relay); their
    Message-IDs."""
    async with runtime.sessionmaker.begin() as session:
        headers = set()
        for n in range(count):
            body = MessageCreate(
                to=[f"employee{n}@example.test"], subject=f"Payslip {n}", text="Hi"
            )
            intake = await enqueue_message(
                session, runtime.settings, tenant_id="acme", body=body, idempotency_key=None
            )
            headers.add(intake.message.message_id_header)
    return headers


async def statuses(runtime: Runtime) -> Counter[str]:
    async with runtime.sessionmaker() as session:
        rows = await session.execute(select(Message.status, func.count()).group_by(Message.status))
        return Counter(dict(rows.all()))


async def sending(runtime: Runtime) -> list[tuple[uuid.UUID, str | None]]:
    async with runtime.sessionmaker() as session:
        rows = await session.execute(
            select(Message.id, Message.lease_owner).where(Message.status == MessageStatus.SENDING)
        )
        # A lease is "<worker>#<claim>": the worker is the part before the "#".
        return [(message_id, (owner or "").split("#")[0]) for message_id, owner in rows.all()]


async def attempts(runtime: Runtime) -> list[tuple[str, Outcome, str | None]]:
    """(Message-ID, outcome, code) of every attempt."""
    async with runtime.sessionmaker() as session:
        rows = await session.execute(
            select(Message.message_id_header, MessageAttempt.outcome, MessageAttempt.code).join(
                Message, Message.id == MessageAttempt.message_id
            )
        )
        return [(header, outcome, code) for header, outcome, code in rows.all()]


async def wait_until_sent(
    runtime: Runtime,
    sink: Sink,
    total: int,
    workers: WorkerProcesses,
    *,
    sample: bool = False,
) -> dict[str, set[uuid.UUID]]:
    """Wait until `total` messages are sent; with `sample`, which messages each lease owner was
    seen sending meanwhile. Reads the database only when it must: on SQLite every read waits
    for the workers' write lock."""
    seen: dict[str, set[uuid.UUID]] = {}
    counts: Counter[str] | None = None
    deadline = time.monotonic() + DEADLINE
    while True:
        workers.check_running()
        if sample:
            for message_id, owner in await sending(runtime):
                seen.setdefault(owner or "", set()).add(message_id)
        if len(sink.received) >= total:
            counts = await statuses(runtime)
            if counts[MessageStatus.SENT] == total:
                assert counts == {MessageStatus.SENT: total}
                return seen
        assert time.monotonic() < deadline, (
            f"not all {total} sent after {DEADLINE:g} s: {len(sink.received)} arrived, {counts}"
        )
        await asyncio.sleep(0.05)


async def wait_for_arrivals(
    sink: Sink, count: int, workers: WorkerProcesses, *, unanswered: int = 0
) -> None:
    """Wait until `count` messages arrived and `unanswered` of them are still unanswered."""
    deadline = time.monotonic() + DEADLINE
    while len(sink.received) < count or sink.unanswered < unanswered:
        workers.check_running()
        assert time.monotonic() < deadline, (
            f"{len(sink.received)} of {count} messages after {DEADLINE:g} s"
        )
        await asyncio.sleep(0.001)


def arrivals(sink: Sink) -> Counter[str]:
    return Counter(received.message["Message-ID"] for received in sink.received)


async def stop_cleanly(worker: WorkerProcess) -> None:
    assert await worker.stop(within=10) == 0, worker.output()
    assert "worker stopped" in worker.output()


async def test_sigkill_mid_delivery_loses_nothing_and_repeats_only_unanswered_sends(
    runtime: Runtime, default_relay: Sink, workers: WorkerProcesses
) -> None:
    total = 200
    expected = await enqueue(runtime, total)
    default_relay.data_delay = 0.01

    # A short lease, so that its rows come back soon after the kill. Not shorter: on SQLite a
    # delivery can wait over a second for the write lock, and a lease that expires under a live
    # worker is taken over by that same worker, which then sends the message twice.
    a = workers.start("worker-a", worker_lease="PT5S")
    # Kill it while the relay holds messages it has not answered: those sends have an unknown
    # outcome for the worker, so they are the ones that may arrive twice.
    await wait_for_arrivals(default_relay, 100, workers, unanswered=1)
    a.kill()
    received_at_kill = len(default_relay.received)
    async with runtime.sessionmaker() as session:
        in_flight = set(
            await session.scalars(
                select(Message.message_id_header).where(Message.status == MessageStatus.SENDING)
            )
        )
    assert 0 < len(in_flight) <= int(FAST["default_concurrency"])
    assert received_at_kill < total, "the kill came after the end of the run"

    b = workers.start("worker-b")
    started = time.monotonic()
    await wait_until_sent(runtime, default_relay, total, workers)
    finished = time.monotonic() - started
    await stop_cleanly(b)

    arrived = arrivals(default_relay)
    assert set(arrived) == expected, "every message arrived"
    twice = {header for header, count in arrived.items() if count > 1}
    assert max(arrived.values()) == 2
    assert twice, "the kill left a message the relay had but the worker did not know it had"
    assert twice <= in_flight, "only messages in flight at the kill arrived twice"
    lost = {
        header
        for header, outcome, code in await attempts(runtime)
        if outcome == Outcome.UNKNOWN and code == "lease_expired"
    }
    assert in_flight <= lost, "each lease the kill left behind is recorded as an unknown outcome"
    print(
        f"kill after {received_at_kill} arrivals with {len(in_flight)} in flight;"
        f" {len(twice)} arrived twice; worker B finished in {finished:.1f} s"
    )


# Two workers racing for rows need row locks; SQLite serialises every writer instead.
if "postgres" in BACKENDS:

    @pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
    async def test_two_worker_processes_share_one_backlog(
        runtime: Runtime, default_relay: Sink, workers: WorkerProcesses
    ) -> None:
        total = 200
        expected = await enqueue(runtime, total)
        default_relay.data_delay = 0.005

        pair = [workers.start(f"worker-{n}", default_concurrency="20") for n in (1, 2)]
        seen = await wait_until_sent(runtime, default_relay, total, workers, sample=True)
        for worker in pair:
            await stop_cleanly(worker)

        arrived = arrivals(default_relay)
        assert set(arrived) == expected
        assert set(arrived.values()) == {1}, "no message arrived twice"
        # Attempts do not name their worker, but a row being sent names its lease owner.
        shares = {worker.name: len(seen.get(worker.owner(), ())) for worker in pair}
        assert all(share >= 10 for share in shares.values()), shares
        assert set(seen) <= {worker.owner() for worker in pair}
        print(f"messages seen in flight per worker: {shares}")


async def test_sigterm_finishes_in_flight_sends_and_leaves_no_lease(
    runtime: Runtime, default_relay: Sink, workers: WorkerProcesses
) -> None:
    total = 50
    expected = await enqueue(runtime, total)
    default_relay.data_delay = 0.2

    a = workers.start("worker-a")
    await wait_for_arrivals(default_relay, 1, workers)
    started = time.monotonic()
    await stop_cleanly(a)
    stopped_in = time.monotonic() - started

    counts = await statuses(runtime)
    assert set(counts) <= {MessageStatus.SENT, MessageStatus.QUEUED}, counts
    assert 0 < counts[MessageStatus.SENT] < total, counts
    async with runtime.sessionmaker() as session:
        sent = set(
            await session.scalars(
                select(Message.message_id_header).where(Message.status == MessageStatus.SENT)
            )
        )
        held = await session.scalar(select(func.count()).where(Message.lease_owner.is_not(None)))
    assert held == 0
    assert set(arrivals(default_relay)) == sent, "what reached the relay is recorded as sent"

    b = workers.start("worker-b")
    await wait_until_sent(runtime, default_relay, total, workers)
    await stop_cleanly(b)
    arrived = arrivals(default_relay)
    assert set(arrived) == expected
    assert set(arrived.values()) == {1}, "no message arrived twice"
    assert {outcome for _, outcome, _ in await attempts(runtime)} == {Outcome.SENT}
    print(f"SIGTERM: stopped in {stopped_in:.2f} s with {len(sent)} sent, {total - len(sent)} left")
