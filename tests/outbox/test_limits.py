"""Per-mailbox concurrency cap and send rate hold across several workers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from aiosmtpd.smtp import SMTP, Envelope, Session

from app.outbox.worker import Worker
from app.runtime import Runtime
from tests.conftest import TENANT_PASSWORD
from tests.fixtures.smtpd import SmtpServer, TLSFiles
from tests.outbox.conftest import TenantFactory, drain, post_message


class CountingServer(SmtpServer):
    """Records how many messages it was receiving at once."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.active = 0
        self.peak = 0
        self.arrivals: list[float] = []

    async def handle_DATA(  # noqa: N802 (aiosmtpd hook name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.active += 1  # the server's loop is single-threaded: no lock needed
        self.peak = max(self.peak, self.active)
        self.arrivals.append(time.monotonic())
        try:
            await asyncio.sleep(0.2)
            return await super().handle_DATA(server, session, envelope)
        finally:
            self.active -= 1


def counting_server(tls_files: TLSFiles) -> CountingServer:
    server = CountingServer(
        security="starttls", tls=tls_files, users={"hr@acme.test": TENANT_PASSWORD}
    )
    server.start()
    return server


async def test_concurrency_cap_holds_across_workers(
    admin: httpx.AsyncClient, tls_files: TLSFiles, tenant: TenantFactory, runtime: Runtime
) -> None:
    server = counting_server(tls_files)
    try:
        await tenant("acme", "active", server=server)
        runtime.settings.mailbox_concurrency = 2
        for n in range(12):
            await post_message(admin, "acme", subject=f"m{n}")
        workers = [Worker(runtime, owner=f"w{n}") for n in range(3)]
        try:
            async with asyncio.timeout(60):
                await asyncio.gather(*(w.run_until_empty() for w in workers))
        finally:
            for w in workers:
                await w.aclose()
        assert len(server.received) == 12
        assert server.peak == 2, "two at once, never more, though three workers had room"
    finally:
        server.stop()


async def test_send_rate_holds_across_workers(
    admin: httpx.AsyncClient, tls_files: TLSFiles, tenant: TenantFactory, runtime: Runtime
) -> None:
    server = counting_server(tls_files)
    try:
        await tenant("acme", "active", server=server)
        # 60 a minute: a burst of 10 (ten seconds' worth), then one a second.
        runtime.settings.smtp_rate_per_minute = 60
        runtime.settings.mailbox_concurrency = 10
        for n in range(30):
            await post_message(admin, "acme", subject=f"m{n}")
        workers = [Worker(runtime, owner=f"w{n}") for n in range(2)]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(w.run(stop)) for w in workers]
        await asyncio.sleep(3.5)
        stop.set()
        await asyncio.gather(*tasks)
        sent = len(server.received)
        assert 10 <= sent <= 14, f"burst of 10 plus about one a second, got {sent}"

        # The rest is not lost: it goes out as the bucket refills.
        runtime.settings.smtp_rate_per_minute = 6000
        worker = Worker(runtime, owner="finisher")
        try:
            await drain(worker, seconds=30)
        finally:
            await worker.aclose()
        assert len({r.message["Message-ID"] for r in server.received}) == 30
    finally:
        server.stop()
