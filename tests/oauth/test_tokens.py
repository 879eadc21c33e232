"""Tokens over time: refresh once per expiry, Microsoft's rotation, revocation, a broken app."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import select

from app.mailboxes.models import Mailbox
from app.oauth.tokens import REFRESH_TOKEN
from app.outbox.worker import Worker
from app.runtime import Runtime
from tests.fixtures.providers import FakeProviders
from tests.fixtures.smtpd import SmtpServer
from tests.oauth.conftest import create_mailbox, sign_in
from tests.outbox.conftest import drain, events, notifications, post_message
from tests.test_secrets_at_rest import stored_bytes


async def connect(admin: httpx.AsyncClient, provider: str, email: str) -> None:
    await create_mailbox(admin, "acme", email)
    await sign_in(admin, "acme", provider)
    tested = await admin.post("/v1/tenants/acme/mailbox/test")
    assert tested.json()["status"] == "active", tested.text


async def stored_refresh_token(runtime: Runtime) -> str:
    async with runtime.sessionmaker() as session:
        mailbox = await session.scalar(select(Mailbox))
    assert mailbox is not None and mailbox.oauth_refresh_token_enc is not None
    return runtime.secrets.decrypt(
        mailbox.oauth_refresh_token_enc, context=mailbox.secret_context(REFRESH_TOKEN)
    )


async def test_one_refresh_per_expiry_under_concurrent_sends(
    admin: httpx.AsyncClient, fake: FakeProviders, runtime: Runtime
) -> None:
    await connect(admin, "google", "hr@acme.test")
    runtime.settings.mailbox_concurrency = 4
    workers = [Worker(runtime, owner=f"w{n}") for n in range(2)]  # two "processes"
    try:
        for round_ in range(3):
            fake.expire_access_tokens("google")  # the API now answers 401 to the old token
            before = fake.refresh_count["google"]
            for n in range(8):
                await post_message(admin, "acme", subject=f"r{round_} m{n}")
            async with asyncio.timeout(30):
                await asyncio.gather(*(w.run_until_empty() for w in workers))
            assert fake.refresh_count["google"] - before == 1, f"round {round_}"
    finally:
        for w in workers:
            await w.aclose()
    assert len(fake.gmail_sent) == 1 + 24
    assert len({s.token for s in fake.gmail_sent}) == 4  # the test's token, then one per round


async def test_short_lived_tokens_are_refreshed_before_they_expire(
    admin: httpx.AsyncClient, fake: FakeProviders, runtime: Runtime, worker: Worker
) -> None:
    fake.access_token_ttl = 2  # refreshed after one second, halfway through its life
    await connect(admin, "google", "hr@acme.test")
    for n in range(3):
        await asyncio.sleep(1.1)
        await post_message(admin, "acme", subject=f"m{n}")
        await drain(worker)
    assert fake.refresh_count["google"] == 3
    assert not [r for r in fake.requests if r.status == 401]


async def test_microsoft_rotated_refresh_token_is_the_one_in_use(
    admin: httpx.AsyncClient, fake: FakeProviders, runtime: Runtime, worker: Worker
) -> None:
    await connect(admin, "microsoft", "hr@contoso.test")
    first = await stored_refresh_token(runtime)
    for n in range(3):
        fake.expire_access_tokens("microsoft")
        await post_message(admin, "acme", subject=f"m{n}")
        await drain(worker)
        assert await stored_refresh_token(runtime) == fake.latest_refresh_token("microsoft")
    assert await stored_refresh_token(runtime) != first
    used = [
        r["refresh_token"] for r in fake.token_requests if r.get("grant_type") == "refresh_token"
    ]
    assert len(used) == len(set(used)) == 3, "each refresh used the newest token"
    assert len(fake.graph_sent) == 1 + 3


async def test_revoked_grant_deactivates_and_reroutes(
    admin: httpx.AsyncClient,
    fake: FakeProviders,
    runtime: Runtime,
    worker: Worker,
    default_relay: SmtpServer,
) -> None:
    await connect(admin, "google", "hr@acme.test")
    fake.revoke_all("google")
    posted = await post_message(admin, "acme", subject="after the revocation")
    await drain(worker)

    mailbox = (await admin.get("/v1/tenants/acme/mailbox")).json()
    assert mailbox["status"] == "inactive"
    assert mailbox["last_error"]["code"] == "oauth_token_revoked"
    by_subject = {r.message["Subject"]: r for r in default_relay.received}
    rerouted = by_subject["after the revocation"].message
    assert rerouted["Message-ID"] == posted["message_id_header"]
    assert rerouted["From"] == "Acme HR <notifications@example.com>"
    assert rerouted["Reply-To"] == "Acme HR <hr@acme.test>"
    assert len(await notifications(runtime)) == 1
    assert "Your mailbox hr@acme.test was disconnected" in by_subject
    assert len(await events(runtime, "mailbox.deactivated")) == 1


async def test_expired_client_secret_deactivates_nobody_and_readyz_says_so(
    admin: httpx.AsyncClient,
    fake: FakeProviders,
    runtime: Runtime,
    worker: Worker,
    default_relay: SmtpServer,
) -> None:
    await connect(admin, "microsoft", "hr@contoso.test")
    fake.fail_token("microsoft", "expired_secret")
    fake.expire_access_tokens("microsoft")
    await post_message(admin, "acme", subject="during the outage")
    await drain(worker)

    assert [r.message["Subject"] for r in default_relay.received] == ["during the outage"]
    assert default_relay.received[0].message["Reply-To"] == "Acme HR <hr@contoso.test>"
    mailbox = (await admin.get("/v1/tenants/acme/mailbox")).json()
    assert mailbox["status"] == "active"
    assert await notifications(runtime) == []
    ready = (await admin.get("/readyz")).json()
    assert ready["status"] == "degraded"
    [alert] = ready["checks"]["providers"]["alerts"]
    assert (alert["provider"], alert["code"]) == ("microsoft", "oauth_client_secret_expired")

    fake.clear_failures()  # the operator rotated the secret
    await post_message(admin, "acme", subject="after the fix")
    await drain(worker)
    assert fake.graph_sent[-1].message["subject"] == "after the fix"
    assert (await admin.get("/readyz")).json()["checks"]["providers"]["alerts"] == []


async def test_gmail_throttling_is_retried_after_retry_after(
    admin: httpx.AsyncClient, fake: FakeProviders, worker: Worker
) -> None:
    await connect(admin, "google", "hr@acme.test")
    fake.fail_gmail("429", times=1, retry_after=0)
    posted = await post_message(admin, "acme", subject="throttled")
    await drain(worker)
    body = (await admin.get(f"/v1/tenants/acme/messages/{posted['id']}")).json()
    assert [(a["outcome"], a["code"]) for a in body["attempts"]] == [
        ("deferred", "gmail_throttled"),
        ("sent", None),
    ]


async def test_tokens_are_never_stored_in_plaintext(
    admin: httpx.AsyncClient, fake: FakeProviders, runtime: Runtime
) -> None:
    await connect(admin, "microsoft", "hr@contoso.test")
    raw = await stored_bytes(runtime)
    assert b"hr@contoso.test" in raw, "the scan sees the stored rows"
    secrets = [fake.latest_refresh_token("microsoft"), *{s.token for s in fake.graph_sent}]
    for secret in secrets:
        assert secret and secret.encode() not in raw
    mailbox = (await admin.get("/v1/tenants/acme/mailbox")).json()
    assert not any(secret in str(mailbox) for secret in secrets)


async def test_delete_revokes_the_google_grant_and_erases_tokens(
    admin: httpx.AsyncClient, fake: FakeProviders, runtime: Runtime
) -> None:
    await connect(admin, "google", "hr@acme.test")
    token = await stored_refresh_token(runtime)
    assert (await admin.delete("/v1/tenants/acme/mailbox")).status_code == 204
    assert fake.revoke_requests == [token]
    async with runtime.sessionmaker() as session:
        assert await session.scalar(select(Mailbox)) is None
    await admin.post("/v1/tenants/acme/mailbox", json={"display_name": "A", "email": "a@acme.test"})
    assert (await admin.get("/v1/tenants/acme/mailbox")).json()["oauth"] is None


async def test_large_gmail_message_goes_through_the_upload_endpoint(
    admin: httpx.AsyncClient, fake: FakeProviders, worker: Worker
) -> None:
    import base64

    await connect(admin, "google", "hr@acme.test")
    big = bytes(range(256)) * (6 * 4096)  # 6 MiB: above the inline JSON threshold
    posted = await post_message(
        admin,
        "acme",
        subject="big",
        attachments=[
            {
                "filename": "scan.bin",
                "content_type": "application/octet-stream",
                "content_base64": base64.b64encode(big).decode(),
            }
        ],
    )
    await drain(worker)
    sent = fake.gmail_sent[-1]
    assert sent.endpoint == "upload-media"
    assert sent.message["Message-ID"] == posted["message_id_header"]
    [attachment] = list(sent.message.iter_attachments())
    assert attachment.get_content() == big


async def test_attachments_over_graphs_inline_limit_fail_clearly(
    admin: httpx.AsyncClient, fake: FakeProviders, worker: Worker
) -> None:
    import base64

    await connect(admin, "microsoft", "hr@contoso.test")
    posted = await post_message(
        admin,
        "acme",
        subject="too big for Graph",
        attachments=[
            {
                "filename": "scan.bin",
                "content_type": "application/octet-stream",
                "content_base64": base64.b64encode(b"x" * (4 * 1024 * 1024)).decode(),
            }
        ],
    )
    await drain(worker)
    body = (await admin.get(f"/v1/tenants/acme/messages/{posted['id']}")).json()
    assert body["status"] == "failed"
    assert body["attempts"][-1]["code"] == "attachments_too_large_for_graph"
    assert (await admin.get("/v1/tenants/acme/mailbox")).json()["status"] == "active"


async def test_test_mail_with_a_revoked_grant_reports_the_code(
    admin: httpx.AsyncClient, fake: FakeProviders
) -> None:
    await create_mailbox(admin, "acme", "hr@acme.test")
    await sign_in(admin, "acme", "google")
    fake.revoke_all("google")
    fake.expire_access_tokens("google")
    response = await admin.post("/v1/tenants/acme/mailbox/test")
    assert response.status_code == 422
    assert response.json()["code"] == "oauth_token_revoked"
    mailbox = (await admin.get("/v1/tenants/acme/mailbox")).json()
    assert (mailbox["status"], mailbox["last_error"]["code"]) == (
        "pending_test",
        "oauth_token_revoked",
    )


def test_production_requires_https_provider_urls() -> None:
    import pytest
    from pydantic import ValidationError

    from app.settings import Settings

    with pytest.raises(ValidationError, match="https"):
        Settings(env="production", secret_keys=["k"], google_token_url="http://evil.test/token")
