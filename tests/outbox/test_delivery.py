"""End to end: intake → outbox → worker → real SMTP servers, with the right sender and headers."""

from __future__ import annotations

from collections import Counter

import httpx

from app.outbox.worker import Worker
from app.runtime import Runtime
from tests.conftest import SmtpServerFactory
from tests.fixtures.smtpd import SmtpServer
from tests.outbox.conftest import TenantFactory, drain, events, post_message


async def test_200_messages_across_three_tenants_arrive_once_through_the_right_sender(
    admin: httpx.AsyncClient,
    smtp_server: SmtpServerFactory,
    default_relay: SmtpServer,
    tenant: TenantFactory,
    worker: Worker,
    runtime: Runtime,
) -> None:
    acme_server = smtp_server(security="starttls")
    acme = await tenant("acme", "active", server=acme_server)
    globex = await tenant("globex", "not_configured")
    initech = await tenant("initech", "inactive", server=smtp_server(security="tls"))
    tenants = [acme, globex, initech]

    posted: dict[str, str] = {}
    for n in range(200):
        tenant_id = tenants[n % 3]
        message = await post_message(
            admin, tenant_id, to=[f"employee{n}@example.test"], subject=f"Payslip {n}"
        )
        assert message["status"] == "queued"
        posted[message["message_id_header"]] = tenant_id

    await drain(worker)

    arrived = [(r, "acme") for r in acme_server.received] + [
        (r, "default") for r in default_relay.received
    ]
    ids = Counter(r.message["Message-ID"] for r, _ in arrived)
    assert set(ids) == set(posted)
    assert all(count == 1 for count in ids.values()), "each message exactly once"

    for received, server in arrived:
        message = received.message
        tenant_id = posted[message["Message-ID"]]
        if tenant_id == "acme":
            assert server == "acme"
            assert message["From"] == "Acme HR <hr@acme.test>"
            assert message["Reply-To"] is None
            assert received.login == "hr@acme.test"
        else:
            assert server == "default"
            name = tenant_id.capitalize()
            assert message["From"] == f"{name} HR <notifications@example.com>"
            assert message["Reply-To"] == f"{name} HR <hr@{tenant_id}.test>"
            assert received.mail_from == "notifications@example.com"

    page = (await admin.get("/v1/tenants/acme/messages", params={"limit": 100})).json()
    assert len(page["items"]) == 67
    for item in page["items"]:
        assert item["status"] == "sent"
        assert item["via"] == "mailbox"
        assert item["from"] == "Acme HR <hr@acme.test>"
        assert [a["outcome"] for a in item["attempts"]] == ["sent"]
    assert len(await events(runtime, "message.sent")) == 200


async def test_caller_reply_to_wins_and_tenant_without_mailbox_uses_default_name(
    admin: httpx.AsyncClient,
    default_relay: SmtpServer,
    tenant: TenantFactory,
    worker: Worker,
) -> None:
    await tenant("globex", "not_configured")
    await post_message(admin, "globex", reply_to="boss@globex.test")
    await post_message(admin, "umbrella")  # no mailbox at all
    await drain(worker)
    by_from = {r.message["From"]: r.message for r in default_relay.received}
    assert by_from["Globex HR <notifications@example.com>"]["Reply-To"] == "boss@globex.test"
    assert by_from["Notifications <notifications@example.com>"]["Reply-To"] is None


async def test_message_content_arrives_intact(
    admin: httpx.AsyncClient, default_relay: SmtpServer, worker: Worker
) -> None:
    import base64

    pdf = b"%PDF-1.4\x00\xff\xfe payslip"
    posted = await post_message(
        admin,
        "umbrella",
        to=["anna@example.test"],
        cc=["hr-archive@example.test"],
        bcc=["audit@example.test"],
        subject="Gehaltsabrechnung Dezember ✓",
        text="Hallo Anna",
        html="<p>Hallo <b>Anna</b></p>",
        attachments=[
            {
                "filename": "Abrechnung.pdf",
                "content_type": "application/pdf",
                "content_base64": base64.b64encode(pdf).decode(),
            }
        ],
        headers={"X-Hrms-Event": "payslip"},
    )
    await drain(worker)
    [received] = default_relay.received
    assert sorted(received.rcpt_tos) == sorted(
        ["anna@example.test", "hr-archive@example.test", "audit@example.test"]
    )
    message = received.message
    assert message["Message-ID"] == posted["message_id_header"]
    assert message["Subject"] == "Gehaltsabrechnung Dezember ✓"
    assert message["Cc"] == "hr-archive@example.test"
    assert message["Bcc"] is None
    assert message["X-Hrms-Event"] == "payslip"
    html = message.get_body(preferencelist=("html",))
    assert html is not None and "<b>Anna</b>" in html.get_content()
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content() == pdf


async def test_one_connection_is_reused_and_closed_when_idle(
    admin: httpx.AsyncClient,
    smtp_server: SmtpServerFactory,
    tenant: TenantFactory,
    runtime: Runtime,
) -> None:
    server = smtp_server(security="starttls")
    await tenant("acme", "active", server=server)
    server.commands.clear()
    runtime.settings.mailbox_concurrency = 1
    for n in range(20):
        await post_message(admin, "acme", subject=f"m{n}")
    worker = Worker(runtime, owner="reuse")
    try:
        await drain(worker)
        assert len(server.received) == 20
        verbs = [c.split()[0].upper() for c in server.commands if c.strip()]
        assert verbs.count("AUTH") == 1, "one login for twenty messages"
        assert verbs.count("STARTTLS") == 1
        assert "QUIT" not in verbs
        await worker.pool.close_idle(0)
        assert server.commands[-1].strip().upper() == "QUIT"
    finally:
        await worker.aclose()


async def test_a_slow_send_outliving_its_lease_is_not_sent_again_by_its_own_worker(
    admin: httpx.AsyncClient, default_relay: SmtpServer, runtime: Runtime
) -> None:
    from datetime import timedelta

    runtime.settings.worker_lease = timedelta(milliseconds=300)
    default_relay.data_delay = 1.0  # each send outlives its lease
    posted = [await post_message(admin, "umbrella", subject=f"slow {n}") for n in range(3)]
    worker = Worker(runtime, owner="slow")
    try:
        await drain(worker)
    finally:
        await worker.aclose()
    arrived = Counter(r.message["Message-ID"] for r in default_relay.received)
    assert arrived == Counter({m["message_id_header"]: 1 for m in posted})
