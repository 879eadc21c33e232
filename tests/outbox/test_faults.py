"""A mail server that misbehaves, a password that changes: nothing is lost, nothing sent twice
except after an unknown outcome, and a broken mailbox is switched off exactly once."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from app.outbox.worker import Worker
from app.runtime import Runtime
from app.settings import Settings
from tests.conftest import TENANT_PASSWORD
from tests.fixtures.smtpd import SmtpServer, TLSFiles
from tests.outbox.conftest import TenantFactory, drain, events, notifications, post_message


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"smtp_timeout": timedelta(seconds=1)})


class FaultyServer(SmtpServer):
    """Scripted faults: per recipient at RCPT, per subject at DATA; each fires once."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.rcpt_script: dict[str, list[str]] = {}
        self.rcpt_stall: set[str] = set()
        self.close_after_421: set[str] = set()
        self.drop_after_dot: set[str] = set()
        self.after_data: Any = None
        self.end_sessions = False  # close authenticated sessions at their next MAIL FROM

    async def handle_MAIL(  # noqa: N802 (aiosmtpd hook name)
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.end_sessions:
            assert server.transport is not None
            server.transport.close()
            await asyncio.Event().wait()
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 (aiosmtpd hook name)
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.rcpt_stall:
            self.rcpt_stall.discard(address)
            await asyncio.sleep(3)  # past the client's 1 s timeout
        script = self.rcpt_script.get(address)
        if script:
            return script.pop(0)
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(  # noqa: N802 (aiosmtpd hook name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        subject = _subject(envelope.original_content or b"")
        if subject in self.close_after_421:
            self.close_after_421.discard(subject)
            await server.push("421 4.3.2 shutting down")
            assert server.transport is not None
            server.transport.close()
            await asyncio.Event().wait()
        if subject in self.drop_after_dot:
            self.drop_after_dot.discard(subject)
            self.drop_after_data = 1  # kept, but the client never hears so
        reply = await super().handle_DATA(server, session, envelope)
        if self.after_data is not None:
            self.after_data(server)
        return reply


def _subject(content: bytes) -> str:
    for line in content.split(b"\r\n"):
        if line.startswith(b"Subject: "):
            return line[9:].decode()
    return ""


@pytest.fixture
def faulty(tls_files: TLSFiles) -> Any:
    servers: list[FaultyServer] = []

    def start(**options: Any) -> FaultyServer:
        server = FaultyServer(
            security="starttls", tls=tls_files, users={"hr@acme.test": TENANT_PASSWORD}, **options
        )
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        with contextlib.suppress(AssertionError):  # already stopped by the test
            server.stop()


async def test_faulty_server_gets_every_deliverable_message(
    admin: httpx.AsyncClient,
    faulty: Any,
    default_relay: SmtpServer,
    tenant: TenantFactory,
    runtime: Runtime,
    worker: Worker,
) -> None:
    server = faulty()
    await tenant("acme", "active", server=server)
    server.rcpt_script["deferred@example.test"] = ["451 4.3.0 try again later"]
    server.rcpt_stall.add("stalled@example.test")
    server.rcpt_script["nobody@example.test"] = ["550 5.1.1 no such user"] * 5
    server.rcpt_script["gone@example.test"] = ["550 5.1.1 no such user"] * 5
    server.close_after_421.add("closed")
    server.drop_after_dot.add("dropped")

    plain = [await post_message(admin, "acme", subject=f"plain {n}") for n in range(20)]
    deferred = await post_message(admin, "acme", to=["deferred@example.test"], subject="deferred")
    stalled = await post_message(admin, "acme", to=["stalled@example.test"], subject="stalled")
    refused = await post_message(admin, "acme", to=["nobody@example.test"], subject="refused")
    partial = await post_message(
        admin, "acme", to=["anna@example.test", "gone@example.test"], subject="partial"
    )
    closed = await post_message(admin, "acme", subject="closed")
    dropped = await post_message(admin, "acme", subject="dropped")

    await drain(worker, seconds=60)

    ids = Counter(r.message["Message-ID"] for r in server.received)
    deliverable = [*plain, deferred, stalled, partial, closed, dropped]
    for message in deliverable:
        assert ids[message["message_id_header"]] >= 1, message["subject"]
    assert refused["message_id_header"] not in ids
    twice = {i for i, n in ids.items() if n > 1}
    assert twice <= {dropped["message_id_header"]}, "only an unknown outcome may repeat"
    assert default_relay.received == [], "transient faults never left the mailbox"

    async def status(message: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = (
            await admin.get(f"/v1/tenants/acme/messages/{message['id']}")
        ).json()
        return body

    for message in deliverable:
        assert (await status(message))["status"] == "sent", message["subject"]
    failed = await status(refused)
    assert failed["status"] == "failed"
    assert [(a["outcome"], a["code"]) for a in failed["attempts"]] == [("failed", "smtp_rejected")]
    assert "550" in failed["attempts"][0]["detail"]

    assert [a["outcome"] for a in (await status(deferred))["attempts"]] == ["deferred", "sent"]
    assert [a["outcome"] for a in (await status(stalled))["attempts"]] == ["deferred", "sent"]
    assert [a["outcome"] for a in (await status(closed))["attempts"]] == ["deferred", "sent"]
    assert (await status(dropped))["attempts"][0]["outcome"] == "unknown"
    partial_attempts = (await status(partial))["attempts"]
    assert [a["code"] for a in partial_attempts] == ["recipients_refused"]
    assert "gone@example.test" in partial_attempts[0]["detail"]
    [partial_received] = [
        r for r in server.received if r.message["Message-ID"] == partial["message_id_header"]
    ]
    assert partial_received.rcpt_tos == ["anna@example.test"]

    mailbox = (await admin.get("/v1/tenants/acme/mailbox")).json()
    assert mailbox["status"] == "active"
    assert await notifications(runtime) == []


async def test_deferred_recipient_is_retried_alone(
    admin: httpx.AsyncClient, faulty: Any, tenant: TenantFactory, worker: Worker
) -> None:
    server = faulty()
    await tenant("acme", "active", server=server)
    server.rcpt_script["later@example.test"] = ["452 4.2.2 mailbox full"]
    message = await post_message(
        admin, "acme", to=["now@example.test", "later@example.test"], subject="split"
    )
    await drain(worker)
    assert [r.rcpt_tos for r in server.received] == [["now@example.test"], ["later@example.test"]]
    assert {r.message["Message-ID"] for r in server.received} == {message["message_id_header"]}
    body = (await admin.get(f"/v1/tenants/acme/messages/{message['id']}")).json()
    assert body["status"] == "sent"
    assert [a["outcome"] for a in body["attempts"]] == ["deferred", "sent"]


async def test_password_change_mid_stream_deactivates_once_and_reroutes(
    admin: httpx.AsyncClient,
    faulty: Any,
    default_relay: SmtpServer,
    tenant: TenantFactory,
    runtime: Runtime,
) -> None:
    server = faulty()
    await tenant("acme", "active", server=server, notify_emails=["it@acme.test"])
    runtime.settings.mailbox_concurrency = 1  # one connection: the cut is at a known message
    delivered = 0

    def change_password_after_ten(smtp: SMTP) -> None:
        nonlocal delivered
        delivered += 1
        if delivered == 10:
            server.set_password("hr@acme.test", "changed by the company admin")
            server.end_sessions = True  # as servers do: the old login is over, the next fails

    server.after_data = change_password_after_ten
    posted = [await post_message(admin, "acme", subject=f"leave request {n}") for n in range(30)]
    worker = Worker(runtime, owner="single")
    try:
        await drain(worker, seconds=60)
    finally:
        await worker.aclose()

    through_mailbox = {r.message["Message-ID"] for r in server.received}
    assert len(through_mailbox) == len(server.received) == 10
    rerouted = [
        r for r in default_relay.received if r.message["Subject"].startswith("leave request")
    ]
    assert len(rerouted) == 20
    assert through_mailbox | {r.message["Message-ID"] for r in rerouted} == {
        m["message_id_header"] for m in posted
    }
    for received in rerouted:
        assert received.message["From"] == "Acme HR <notifications@example.com>"
        assert received.message["Reply-To"] == "Acme HR <hr@acme.test>"

    [notice] = [r for r in default_relay.received if "disconnected" in r.message["Subject"]]
    assert notice.rcpt_tos == ["it@acme.test"]
    assert "smtp_auth_failed" in notice.message.get_content()
    assert len(await notifications(runtime)) == 1
    assert len(await events(runtime, "mailbox.deactivated")) == 1

    mailbox = (await admin.get("/v1/tenants/acme/mailbox")).json()
    assert mailbox["status"] == "inactive"
    assert mailbox["last_error"]["code"] == "smtp_auth_failed"
    assert mailbox["deactivated_at"] is not None


async def test_many_workers_hitting_a_revoked_password_deactivate_once(
    admin: httpx.AsyncClient,
    faulty: Any,
    default_relay: SmtpServer,
    tenant: TenantFactory,
    runtime: Runtime,
) -> None:
    server = faulty()
    await tenant("acme", "active", server=server)
    server.set_password("hr@acme.test", "revoked")
    runtime.settings.mailbox_concurrency = 8
    posted = [await post_message(admin, "acme", subject=f"m{n}") for n in range(24)]
    workers = [Worker(runtime, owner=f"w{n}") for n in range(3)]
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(w.run_until_empty() for w in workers))
    finally:
        for w in workers:
            await w.aclose()

    assert server.received == []
    arrived = Counter(r.message["Message-ID"] for r in default_relay.received)
    for message in posted:
        assert arrived[message["message_id_header"]] == 1
    assert len(await notifications(runtime)) == 1
    assert len(await events(runtime, "mailbox.deactivated")) == 1
    notices = [r for r in default_relay.received if "disconnected" in r.message["Subject"]]
    assert len(notices) == 1


async def test_a_test_mail_reactivates_and_mail_flows_through_the_mailbox_again(
    admin: httpx.AsyncClient,
    faulty: Any,
    default_relay: SmtpServer,
    tenant: TenantFactory,
    runtime: Runtime,
    worker: Worker,
) -> None:
    server = faulty()
    await tenant("acme", "inactive", server=server)
    await post_message(admin, "acme", subject="while inactive")
    await drain(worker)
    assert [r.message["Subject"] for r in default_relay.received] == ["while inactive"]

    assert (await admin.post("/v1/tenants/acme/mailbox/test")).json()["status"] == "active"
    server.received.clear()
    await post_message(admin, "acme", subject="after the test")
    await drain(worker)
    assert [r.message["Subject"] for r in server.received] == ["after the test"]
    assert [e.type for e in await events(runtime, "mailbox.activated")] == [
        "mailbox.activated",
        "mailbox.activated",
    ]


async def test_unreachable_mailbox_reroutes_after_the_window_then_deactivates(
    admin: httpx.AsyncClient,
    faulty: Any,
    default_relay: SmtpServer,
    tenant: TenantFactory,
    runtime: Runtime,
) -> None:
    server = faulty()
    await tenant("acme", "active", server=server)
    server.stop()  # the company's server is gone: connections are refused
    runtime.settings.mailbox_retry_window = timedelta(milliseconds=300)
    runtime.settings.mailbox_broken_after = timedelta(seconds=1)
    first = await post_message(admin, "acme", subject="first")
    worker = Worker(runtime, owner="w")
    try:
        await drain(worker)
        body = (await admin.get(f"/v1/tenants/acme/messages/{first['id']}")).json()
        outcomes = [a["outcome"] for a in body["attempts"]]
        assert outcomes[0] == "deferred" and outcomes[-2:] == ["rerouted", "sent"]
        assert body["via"] == "default"
        assert (await admin.get("/v1/tenants/acme/mailbox")).json()["status"] == "active"

        await asyncio.sleep(1.0)  # the breakdown now outlasts MAILBOX_BROKEN_AFTER
        await post_message(admin, "acme", subject="second")
        await drain(worker)
    finally:
        await worker.aclose()
    mailbox = (await admin.get("/v1/tenants/acme/mailbox")).json()
    assert mailbox["status"] == "inactive"
    assert mailbox["last_error"]["code"] == "smtp_connect_failed"
    subjects = sorted(r.message["Subject"] for r in default_relay.received)
    assert subjects == ["Your mailbox hr@acme.test was disconnected", "first", "second"]
