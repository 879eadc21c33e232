"""Sign in with Google and Microsoft by HTTP, from the first request to an active mailbox."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import update

from app.oauth.models import OAuthState
from app.outbox.worker import Worker
from app.runtime import Runtime
from tests.fixtures.providers import GMAIL_SEND_SCOPE, FakeProviders
from tests.oauth.conftest import RETURN_URL, browse_to_provider, create_mailbox, sign_in
from tests.outbox.conftest import drain, post_message

PDF = b"%PDF-1.7\x00\xff payslip"


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def test_google_from_sign_in_to_gmail_delivery(
    admin: httpx.AsyncClient, fake: FakeProviders, worker: Worker
) -> None:
    await create_mailbox(admin, "acme", "hr@acme.test")
    callback = await sign_in(admin, "acme", "google")

    assert callback.status_code == 303
    assert callback.headers["location"] == f"{RETURN_URL}&result=authorized"
    [authorize] = fake.authorize_requests
    assert authorize["code_challenge_method"] == "S256"
    assert len(authorize["code_challenge"]) == 43
    assert len(authorize["state"]) >= 43
    assert authorize["access_type"] == "offline"
    assert authorize["prompt"] == "consent"
    assert GMAIL_SEND_SCOPE in authorize["scope"].split()
    assert authorize["redirect_uri"] == "http://localhost:8000/v1/oauth/google/callback"

    mailbox = (await admin.get("/v1/tenants/acme/mailbox")).json()
    assert mailbox["status"] == "pending_test"
    assert mailbox["provider"] == "google"
    assert mailbox["smtp"] is None
    assert mailbox["oauth"]["account_email"] == "hr@acme.test"
    assert mailbox["oauth"]["warning"] is None
    assert GMAIL_SEND_SCOPE in mailbox["oauth"]["scopes"]

    tested = await admin.post("/v1/tenants/acme/mailbox/test")
    assert tested.status_code == 200, tested.text
    assert tested.json()["status"] == "active"
    assert fake.gmail_sent[0].message["From"] == "Acme HR <hr@acme.test>"

    posted = await post_message(
        admin,
        "acme",
        to=["anna@example.test"],
        bcc=["audit@example.test"],
        reply_to="people@acme.test",
        subject="Your payslip",
        text="Hi Anna",
        html="<p>Hi <b>Anna</b></p>",
        attachments=[
            {
                "filename": "payslip.pdf",
                "content_type": "application/pdf",
                "content_base64": base64.b64encode(PDF).decode(),
            }
        ],
    )
    await drain(worker)
    sent = fake.gmail_sent[-1]
    message = sent.message
    assert message["From"] == "Acme HR <hr@acme.test>"
    assert message["Reply-To"] == "people@acme.test"
    assert message["Message-ID"] == posted["message_id_header"]
    assert message["Bcc"] == "audit@example.test"  # Gmail reads, then strips it
    html = message.get_body(preferencelist=("html",))
    assert html is not None and "<b>Anna</b>" in html.get_content()
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content() == PDF
    body = (await admin.get(f"/v1/tenants/acme/messages/{posted['id']}")).json()
    assert (body["status"], body["via"]) == ("sent", "mailbox")


async def test_microsoft_from_sign_in_to_graph_delivery(
    admin: httpx.AsyncClient, fake: FakeProviders, worker: Worker
) -> None:
    await create_mailbox(admin, "acme", "hr@contoso.test")
    callback = await sign_in(admin, "acme", "microsoft")
    assert callback.headers["location"].endswith("result=authorized")
    [authorize] = fake.authorize_requests
    assert authorize["code_challenge_method"] == "S256"
    assert {"offline_access", "Mail.Send"} <= set(authorize["scope"].split())
    assert authorize["redirect_uri"] == "http://localhost:8000/v1/oauth/microsoft/callback"

    mailbox = (await admin.get("/v1/tenants/acme/mailbox")).json()
    assert (mailbox["provider"], mailbox["oauth"]["account_email"]) == (
        "microsoft",
        "hr@contoso.test",
    )
    assert (await admin.post("/v1/tenants/acme/mailbox/test")).json()["status"] == "active"

    posted = await post_message(
        admin,
        "acme",
        to=["anna@example.test"],
        cc=["boss@example.test"],
        bcc=["audit@example.test"],
        reply_to="people@contoso.test",
        subject="Leave approved",
        text="Enjoy",
        html="<p>Enjoy</p>",
        headers={"X-Hrms-Event": "leave"},
        attachments=[
            {
                "filename": "leave.pdf",
                "content_type": "application/pdf",
                "content_base64": base64.b64encode(PDF).decode(),
            }
        ],
    )
    await drain(worker)
    sent = fake.graph_sent[-1]
    message = sent.message
    assert message["subject"] == "Leave approved"
    assert message["from"]["emailAddress"]["address"] == "hr@contoso.test"
    assert message["replyTo"] == [{"emailAddress": {"address": "people@contoso.test"}}]
    assert message["internetMessageId"] == posted["message_id_header"]
    assert message["body"] == {"contentType": "HTML", "content": "<p>Enjoy</p>"}
    assert [r["emailAddress"]["address"] for r in message["ccRecipients"]] == ["boss@example.test"]
    assert [r["emailAddress"]["address"] for r in message["bccRecipients"]] == [
        "audit@example.test"
    ]
    assert message["internetMessageHeaders"] == [{"name": "X-Hrms-Event", "value": "leave"}]
    assert sent.attachments == [("leave.pdf", "application/pdf", PDF)]
    assert sent.save_to_sent_items is False


async def test_account_address_differing_from_the_mailbox_is_warned(
    admin: httpx.AsyncClient, fake: FakeProviders
) -> None:
    await create_mailbox(admin, "acme", "jobs@acme.test")
    fake.ms_mail = None  # Graph /me without `mail`: the UPN is the address
    await sign_in(admin, "acme", "microsoft")
    oauth = (await admin.get("/v1/tenants/acme/mailbox")).json()["oauth"]
    assert oauth["account_email"] == fake.ms_upn
    assert "jobs@acme.test" in oauth["warning"]


async def test_denied_consent_comes_back_as_an_error(
    admin: httpx.AsyncClient, fake: FakeProviders
) -> None:
    await create_mailbox(admin, "acme", "hr@acme.test")
    fake.consent = "deny"
    callback = await sign_in(admin, "acme", "google")
    assert callback.status_code == 303
    assert query(callback.headers["location"]) == {
        "tab": "mailbox",
        "result": "error",
        "code": "oauth_consent_denied",
    }
    assert (await admin.get("/v1/tenants/acme/mailbox")).json()["status"] == "not_configured"


async def test_unticked_gmail_scope_is_refused(
    admin: httpx.AsyncClient, fake: FakeProviders
) -> None:
    await create_mailbox(admin, "acme", "hr@acme.test")
    fake.granted_scopes["google"] = ["openid", "email"]
    callback = await sign_in(admin, "acme", "google")
    assert query(callback.headers["location"])["code"] == "oauth_scope_missing"
    assert (await admin.get("/v1/tenants/acme/mailbox")).json()["provider"] is None


async def test_replayed_forged_and_expired_states_change_nothing(
    admin: httpx.AsyncClient, fake: FakeProviders, runtime: Runtime
) -> None:
    await create_mailbox(admin, "acme", "hr@acme.test")
    started = await admin.post("/v1/tenants/acme/mailbox/oauth/google", json={})
    callback_url = await browse_to_provider(started.json()["authorization_url"])
    parts = urlsplit(callback_url)
    first = await admin.get(f"{parts.path}?{parts.query}")
    assert first.status_code == 200 and "connected" in first.text  # no return_url: a page

    replay = await admin.get(f"{parts.path}?{parts.query}")
    assert replay.status_code == 400
    assert "oauth_state_invalid" in replay.text

    forged = dict(query(callback_url), state="A" * 43)
    response = await admin.get(parts.path, params=forged)
    assert response.status_code == 400 and "oauth_state_invalid" in response.text

    # A state for Google presented at Microsoft's callback is refused (no mix-up).
    started = await admin.post("/v1/tenants/acme/mailbox/oauth/google", json={})
    callback_url = await browse_to_provider(started.json()["authorization_url"])
    response = await admin.get("/v1/oauth/microsoft/callback", params=query(callback_url))
    assert response.status_code == 400

    started = await admin.post("/v1/tenants/acme/mailbox/oauth/google", json={})
    callback_url = await browse_to_provider(started.json()["authorization_url"])
    from datetime import timedelta

    from app.db.base import utcnow

    async with runtime.sessionmaker.begin() as session:
        await session.execute(update(OAuthState).values(expires_at=utcnow() - timedelta(seconds=1)))
    before = (await admin.get("/v1/tenants/acme/mailbox")).json()
    expired = await admin.get(urlsplit(callback_url).path, params=query(callback_url))
    assert expired.status_code == 400
    after = (await admin.get("/v1/tenants/acme/mailbox")).json()
    assert after["updated_at"] == before["updated_at"]


@pytest.mark.parametrize(
    "return_url",
    [
        "https://evil.test/steal",
        "https://hrms.test.evil.test/x",
        "javascript:alert(1)",
        "//evil.test/x",
        "http://hrms.test/x",
    ],
)
async def test_outside_return_url_is_refused(admin: httpx.AsyncClient, return_url: str) -> None:
    await create_mailbox(admin, "acme", "hr@acme.test")
    response = await admin.post(
        "/v1/tenants/acme/mailbox/oauth/google", json={"return_url": return_url}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "return_url_not_allowed"


async def test_unconfigured_provider_is_409(admin: httpx.AsyncClient, runtime: Runtime) -> None:
    await create_mailbox(admin, "acme", "hr@acme.test")
    assert (await admin.get("/v1/tenants/acme/mailbox")).json()["available_providers"] == [
        "smtp",
        "google",
        "microsoft",
    ]
    runtime.settings.microsoft_client_id = None
    response = await admin.post("/v1/tenants/acme/mailbox/oauth/microsoft", json={})
    assert response.status_code == 409
    assert response.json()["code"] == "provider_not_configured"
