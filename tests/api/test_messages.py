"""The messages API as the HRMS sees it: intake, validation, size, idempotency, listing, cancel."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update
from starlette.types import Message as ASGIMessage
from starlette.types import Receive, Scope, Send

from app.db.base import utcnow
from app.mailboxes.models import Mailbox, MailboxStatus
from app.outbox.models import Message, MessageStatus
from app.runtime import Runtime
from app.settings import Settings
from tests.api.test_mailboxes import assert_problem
from tests.conftest import KeyFactory, SmtpServerFactory

URL = "/v1/tenants/acme/messages"
MAILBOX_URL = "/v1/tenants/acme/mailbox"
BODY: dict[str, Any] = {
    "to": ["ann@example.test"],
    "subject": "Your payslip for May",
    "text": "Your payslip is attached.",
}
MAX_MESSAGE_BYTES = 64 * 1024
PDF = "application/pdf"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The app-level body limit is derived from this in create_app.
    return settings.model_copy(update={"max_message_bytes": MAX_MESSAGE_BYTES})


def message_body(**fields: Any) -> dict[str, Any]:
    return {**BODY, **fields}


def attachment(size: int, filename: str = "payslip.pdf") -> dict[str, str]:
    content = base64.b64encode(b"%" * size).decode()
    return {"filename": filename, "content_type": PDF, "content_base64": content}


async def post(
    client: httpx.AsyncClient, tenant: str = "acme", key: str | None = None, **fields: Any
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return await client.post(
        f"/v1/tenants/{tenant}/messages", json=message_body(**fields), headers=headers
    )


async def queued(client: httpx.AsyncClient, tenant: str = "acme", **fields: Any) -> dict[str, Any]:
    response = await post(client, tenant, **fields)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def stored(runtime: Runtime) -> list[Message]:
    """Every message row, read through a session of its own."""
    async with runtime.sessionmaker() as session:
        return list(await session.scalars(select(Message).order_by(Message.created_at)))


async def set_message(runtime: Runtime, message_id: str, **values: Any) -> None:
    async with runtime.sessionmaker.begin() as session:
        await session.execute(
            update(Message).where(Message.id == uuid.UUID(message_id)).values(**values)
        )


# --- intake ---------------------------------------------------------------------------------


async def test_post_answers_202_only_after_the_message_is_committed(
    app: FastAPI, runtime: Runtime, make_key: KeyFactory
) -> None:
    committed_when_answered: list[Message | None] = []

    async def observed(scope: Scope, receive: Receive, send: Send) -> None:
        async def look_then_send(message: ASGIMessage) -> None:
            if message["type"] == "http.response.body" and scope["method"] == "POST":
                message_id = uuid.UUID(json.loads(message["body"])["id"])
                async with asyncio.timeout(5), runtime.sessionmaker() as session:
                    committed_when_answered.append(await session.get(Message, message_id))
            await send(message)

        await app(scope, receive, look_then_send)

    transport = httpx.ASGITransport(app=observed)
    headers = {"Authorization": f"Bearer {await make_key()}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://mailrelay.test", headers=headers
    ) as client:
        response = await post(client, metadata={"employee_id": 42, "run": "2024-05"})
        assert response.status_code == 202, response.text
        body = response.json()
        assert "Idempotent-Replayed" not in response.headers

        assert body["status"] == "queued"
        assert uuid.UUID(body["id"])
        assert body["message_id_header"].startswith("<")
        assert body["message_id_header"].endswith("@example.com>")
        assert body["from"] == "Notifications <notifications@example.com>"
        assert body["reply_to"] is None
        assert body["to"] == ["ann@example.test"]
        assert body["subject"] == "Your payslip for May"
        assert body["attempts"] == []
        assert body["metadata"] == {"employee_id": 42, "run": "2024-05"}
        assert body["via"] is None
        assert body["sent_at"] is None
        assert body["created_at"]

        [row] = committed_when_answered
        assert row is not None, "the 202 was sent before the message was committed"
        assert str(row.id) == body["id"]
        assert row.status == MessageStatus.QUEUED

        fetched = await client.get(f"{URL}/{body['id']}")
        assert fetched.status_code == 200
        assert fetched.json() == body


async def test_tenant_without_mailbox_gets_the_default_sender(admin: httpx.AsyncClient) -> None:
    body = await queued(admin)
    assert body["from"] == "Notifications <notifications@example.com>"
    assert body["reply_to"] is None


@pytest.mark.parametrize(
    ("display_name", "from_", "reply_to"),
    [
        ("Acme HR", "Acme HR <notifications@example.com>", "Acme HR <hr@acme.test>"),
        (
            "Acme, Inc. HR",
            '"Acme, Inc. HR" <notifications@example.com>',
            '"Acme, Inc. HR" <hr@acme.test>',
        ),
    ],
)
async def test_mailbox_not_active_sends_from_default_with_reply_to_the_mailbox(
    admin: httpx.AsyncClient, display_name: str, from_: str, reply_to: str
) -> None:
    created = await admin.post(
        MAILBOX_URL, json={"display_name": display_name, "email": "hr@acme.test"}
    )
    assert created.status_code == 201
    assert created.json()["status"] == "not_configured"

    body = await queued(admin)
    assert body["from"] == from_
    assert body["reply_to"] == reply_to

    smtp = {"password": "pw", "host": "127.0.0.1", "port": 2525, "security": "starttls"}
    assert (await admin.put(f"{MAILBOX_URL}/smtp", json=smtp)).json()["status"] == "pending_test"
    body = await queued(admin)
    assert body["from"] == from_
    assert body["reply_to"] == reply_to


async def test_caller_reply_to_wins(admin: httpx.AsyncClient) -> None:
    assert (await queued(admin, reply_to="payroll@example.test"))["reply_to"] == (
        "payroll@example.test"
    )
    await admin.post(MAILBOX_URL, json={"display_name": "Acme HR", "email": "hr@acme.test"})
    body = await queued(admin, reply_to="payroll@example.test")
    assert body["from"] == "Acme HR <notifications@example.com>"
    assert body["reply_to"] == "payroll@example.test"


async def test_active_mailbox_is_the_sender_and_inactive_falls_back(
    admin: httpx.AsyncClient, smtp_server: SmtpServerFactory, runtime: Runtime
) -> None:
    server = smtp_server(security="starttls")
    await admin.post(MAILBOX_URL, json={"display_name": "Acme HR", "email": "hr@acme.test"})
    smtp = {"password": "correct horse battery staple", "host": "127.0.0.1"}
    smtp |= {"port": server.port, "security": "starttls"}
    assert (await admin.put(f"{MAILBOX_URL}/smtp", json=smtp)).status_code == 200
    tested = await admin.post(f"{MAILBOX_URL}/test")
    assert tested.json()["status"] == "active", tested.text

    body = await queued(admin)
    assert body["from"] == "Acme HR <hr@acme.test>"
    assert body["reply_to"] is None
    body = await queued(admin, reply_to="payroll@example.test")
    assert body["from"] == "Acme HR <hr@acme.test>"
    assert body["reply_to"] == "payroll@example.test"

    async with runtime.sessionmaker.begin() as session:
        await session.execute(
            update(Mailbox).where(Mailbox.tenant_id == "acme").values(status=MailboxStatus.INACTIVE)
        )
    body = await queued(admin)
    assert body["from"] == "Acme HR <notifications@example.com>"
    assert body["reply_to"] == "Acme HR <hr@acme.test>"


async def test_cc_bcc_html_attachments_and_headers_are_accepted(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    body = await queued(
        admin,
        cc=["boss@example.test"],
        bcc=["audit@example.test"],
        html="<p>Your payslip is attached.</p>",
        attachments=[attachment(1000)],
        headers={"X-HRMS-Run": "2024-05", "x-lower-case": "ok"},
    )
    assert body["to"] == ["ann@example.test"]
    assert "bcc" not in body and "cc" not in body
    [row] = await stored(runtime)
    assert str(row.id) == body["id"]


async def test_exactly_100_recipients_are_accepted(admin: httpx.AsyncClient) -> None:
    to = [f"to{n}@example.test" for n in range(40)]
    cc = [f"cc{n}@example.test" for n in range(30)]
    bcc = [f"bcc{n}@example.test" for n in range(30)]
    body = await queued(admin, to=to, cc=cc, bcc=bcc)
    assert body["to"] == to


def _recipients(kind: str, count: int) -> list[str]:
    return [f"{kind}{n}@example.test" for n in range(count)]


INJECTION = "\r\nBcc: victim@evil.test"
DROP = "<leave this field out>"

# Requests that must each be refused with 422 `validation_error`, grouped so that one app
# serves a group (an app per case would make this module slow).
INVALID: dict[str, dict[str, dict[str, Any]]] = {
    "recipients": {
        "empty to": {"to": []},
        "null to": {"to": None},
        "missing to": {"to": DROP},
        "to not an address": {"to": ["not-an-address"]},
        "to without domain": {"to": ["ann@"]},
        "bad cc": {"cc": ["bob at example.test"]},
        "bad bcc": {"bcc": ["@example.test"]},
        "bad reply_to": {"reply_to": "payroll"},
        "101 across to/cc/bcc": {
            "to": _recipients("to", 50),
            "cc": _recipients("cc", 30),
            "bcc": _recipients("bcc", 21),
        },
        "101 in to": {"to": _recipients("to", 101)},
    },
    "control characters": {
        "CRLF in subject": {"subject": f"Payslip{INJECTION}"},
        "LF in subject": {"subject": "Payslip\nMay"},
        "CR in subject": {"subject": "Payslip\rMay"},
        "NUL in subject": {"subject": "Payslip\x00"},
        "CRLF in to": {"to": [f"ann@example.test{INJECTION}"]},
        "trailing LF in to": {"to": ["ann@example.test\n"]},
        "NUL in to": {"to": ["ann\x00@example.test"]},
        "CRLF in cc": {"cc": [f"bob@example.test{INJECTION}"]},
        "CRLF in reply_to": {"reply_to": f"payroll@example.test{INJECTION}"},
        "CRLF in header value": {"headers": {"X-Ref": f"1{INJECTION}"}},
        "LF in header value": {"headers": {"X-Ref": "1\n"}},
        "NUL in header value": {"headers": {"X-Ref": "1\x00"}},
        "CRLF in filename": {"attachments": [attachment(10, f"payslip.pdf{INJECTION}")]},
        "LF in filename": {"attachments": [attachment(10, "payslip\n.pdf")]},
        "NUL in filename": {"attachments": [attachment(10, "payslip\x00.pdf")]},
        "NUL in text": {"text": "Hi\x00"},
    },
    "subject and body": {
        "missing subject": {"subject": DROP},
        "neither text nor html": {"text": DROP},
        "text and html null": {"text": None, "html": None},
    },
    "custom headers": {
        "Bcc": {"headers": {"Bcc": "victim@evil.test"}},
        "From": {"headers": {"From": "ceo@evil.test"}},
        "Content-Type": {"headers": {"Content-Type": "text/html"}},
        "Reply-To": {"headers": {"Reply-To": "x@evil.test"}},
        "bare X-": {"headers": {"X-": "1"}},
        "CRLF in name": {"headers": {"X-Ref: 1\r\nBcc": "v@evil.test"}},
        "trailing LF in name": {"headers": {"X-Ref\n": "1"}},
    },
    "attachments": {
        "invalid base64": {"attachments": [{**attachment(10), "content_base64": "not base64!"}]},
        "base64 with a newline": {
            "attachments": [{**attachment(10), "content_base64": "YWJj\nZGVm"}]
        },
        "content_type without subtype": {
            "attachments": [{**attachment(10), "content_type": "pdf"}]
        },
        "CRLF in content_type": {
            "attachments": [{**attachment(10), "content_type": f"{PDF}{INJECTION}"}]
        },
        "empty filename": {"attachments": [attachment(10, "")]},
        "unknown attachment field": {"attachments": [{**attachment(10), "size": 10}]},
    },
    "unknown fields": {
        "priority": {"priority": "high"},
        "from": {"from": "ceo@example.test"},
    },
}


@pytest.mark.parametrize("group", INVALID)
async def test_invalid_message_is_422_and_nothing_is_stored(
    admin: httpx.AsyncClient, runtime: Runtime, group: str
) -> None:
    not_refused: dict[str, str] = {}
    for case, fields in INVALID[group].items():
        body = {k: v for k, v in message_body(**fields).items() if v != DROP}
        response = await admin.post(URL, json=body)
        problem = response.json()
        if not (
            response.status_code == 422
            and response.headers["content-type"] == "application/problem+json"
            and problem.get("code") == "validation_error"
            and problem.get("errors")
        ):
            not_refused[case] = f"{response.status_code} {response.text[:120]}"
    assert not_refused == {}
    assert await stored(runtime) == []
    assert (await admin.get(URL)).json()["items"] == []


async def test_body_that_is_not_json_is_422(admin: httpx.AsyncClient) -> None:
    response = await admin.post(
        URL, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 422, "validation_error")


# --- size -----------------------------------------------------------------------------------


async def test_attachment_just_over_the_limit_is_413(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await post(admin, attachments=[attachment(MAX_MESSAGE_BYTES + 1)])
    problem = assert_problem(response, 413, "message_too_large")
    assert str(MAX_MESSAGE_BYTES) in problem["detail"]
    assert await stored(runtime) == []


async def test_attachment_comfortably_under_the_limit_is_queued(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    body = await queued(admin, attachments=[attachment(MAX_MESSAGE_BYTES // 2)])
    assert body["status"] == "queued"
    [row] = await stored(runtime)
    assert row.size_bytes <= MAX_MESSAGE_BYTES


async def test_body_beyond_the_request_limit_is_a_413_problem(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    # Far beyond what create_app lets the server read (max_message_bytes * 4 / 3 + 1 MiB).
    response = await post(admin, attachments=[attachment(2 * 1024 * 1024)])
    assert_problem(response, 413, "message_too_large")
    assert await stored(runtime) == []


# --- idempotency ----------------------------------------------------------------------------


async def test_same_key_and_body_replays_the_original(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    first = await post(admin, key="payslip-42-2024-05")
    assert first.status_code == 202
    assert "Idempotent-Replayed" not in first.headers

    again = await post(admin, key="payslip-42-2024-05")
    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert len(await stored(runtime)) == 1


async def test_same_key_with_another_body_is_422(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    first = await post(admin, key="payslip-42-2024-05")
    assert first.status_code == 202
    other = await post(admin, key="payslip-42-2024-05", subject="Something else")
    assert_problem(other, 422, "idempotency_key_reused")
    assert [str(m.id) for m in await stored(runtime)] == [first.json()["id"]]


async def test_same_key_on_another_tenant_is_another_message(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    acme = await post(admin, "acme", key="payslip-42-2024-05")
    globex = await post(admin, "globex", key="payslip-42-2024-05")
    assert acme.status_code == globex.status_code == 202
    assert "Idempotent-Replayed" not in globex.headers
    assert acme.json()["id"] != globex.json()["id"]
    assert len(await stored(runtime)) == 2
    for tenant, response in (("acme", acme), ("globex", globex)):
        page = (await admin.get(f"/v1/tenants/{tenant}/messages")).json()
        assert [m["id"] for m in page["items"]] == [response.json()["id"]]


async def test_key_older_than_24_hours_can_be_reused(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    first = (await post(admin, key="monthly-report")).json()
    await set_message(runtime, first["id"], created_at=utcnow() - timedelta(hours=24, minutes=1))

    second = await post(admin, key="monthly-report")
    assert second.status_code == 202
    assert "Idempotent-Replayed" not in second.headers
    assert second.json()["id"] != first["id"]

    third = await post(admin, key="monthly-report")
    assert third.headers["Idempotent-Replayed"] == "true"
    assert third.json()["id"] == second.json()["id"]
    assert len(await stored(runtime)) == 2

    # An expired key may also come with a different body.
    await set_message(runtime, second.json()["id"], created_at=utcnow() - timedelta(hours=25))
    fourth = await post(admin, key="monthly-report", subject="June report")
    assert fourth.status_code == 202, fourth.text
    assert fourth.json()["id"] not in (first["id"], second.json()["id"])
    assert len(await stored(runtime)) == 3


async def test_key_younger_than_24_hours_is_still_held(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    first = (await post(admin, key="monthly-report")).json()
    await set_message(runtime, first["id"], created_at=utcnow() - timedelta(hours=23))
    again = await post(admin, key="monthly-report")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first["id"]
    assert_problem(
        await post(admin, key="monthly-report", subject="Other"), 422, "idempotency_key_reused"
    )


async def test_concurrent_posts_with_one_key_create_one_message(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    responses = await asyncio.gather(*(post(admin, key="burst") for _ in range(20)))

    assert [r.status_code for r in responses] == [202] * 20, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    replayed = [r for r in responses if r.headers.get("Idempotent-Replayed") == "true"]
    assert len(replayed) == 19
    [row] = await stored(runtime)
    assert str(row.id) == responses[0].json()["id"]


# --- reading and listing --------------------------------------------------------------------


async def test_get_unknown_or_foreign_or_malformed_id(admin: httpx.AsyncClient) -> None:
    assert_problem(await admin.get(f"{URL}/{uuid.uuid4()}"), 404, "message_not_found")

    globex = await queued(admin, "globex")
    assert_problem(await admin.get(f"{URL}/{globex['id']}"), 404, "message_not_found")
    assert (await admin.get(f"/v1/tenants/globex/messages/{globex['id']}")).status_code == 200

    assert_problem(await admin.get(f"{URL}/not-a-uuid"), 422, "validation_error")
    assert_problem(await admin.post(f"{URL}/not-a-uuid/cancel"), 422, "validation_error")


async def test_list_pages_newest_first_without_gaps_or_duplicates(
    admin: httpx.AsyncClient,
) -> None:
    posted = [(await queued(admin, subject=f"Payslip {n}"))["id"] for n in range(7)]
    await queued(admin, "globex")  # another tenant's message is never listed

    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        response = await admin.get(URL, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append([m["id"] for m in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 5

    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for p in pages for i in p] == posted[::-1]

    everything = (await admin.get(URL)).json()
    assert [m["id"] for m in everything["items"]] == posted[::-1]
    assert everything["next_cursor"] is None
    assert everything["items"][0]["subject"] == "Payslip 6"


async def test_list_filters_by_status(admin: httpx.AsyncClient) -> None:
    ids = [(await queued(admin, subject=f"Payslip {n}"))["id"] for n in range(3)]
    assert (await admin.post(f"{URL}/{ids[1]}/cancel")).status_code == 200

    cancelled = (await admin.get(URL, params={"status": "cancelled"})).json()
    assert [m["id"] for m in cancelled["items"]] == [ids[1]]
    assert cancelled["items"][0]["status"] == "cancelled"
    still_queued = (await admin.get(URL, params={"status": "queued"})).json()
    assert [m["id"] for m in still_queued["items"]] == [ids[2], ids[0]]
    assert (await admin.get(URL, params={"status": "sent"})).json()["items"] == []
    assert_problem(await admin.get(URL, params={"status": "lost"}), 422, "validation_error")


async def test_list_limit_out_of_range_is_422(admin: httpx.AsyncClient) -> None:
    for limit in (0, 101, "many"):
        response = await admin.get(URL, params={"limit": limit})
        assert_problem(response, 422, "validation_error")
    assert (await admin.get(URL, params={"limit": 100})).status_code == 200


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


INVALID_CURSORS = {
    "garbage": "not a cursor!",
    "empty": "",
    "punctuation": "%%%",
    "base64 nonsense": _b64("yesterday|nobody"),
    "bad uuid": _b64(f"2024-05-01T00:00:00+00:00|{'z' * 32}"),
    "time without zone": _b64(f"2024-05-01T00:00:00|{uuid.uuid4()}"),
    "not utf-8": base64.urlsafe_b64encode(b"\xff\xfe|x").decode(),
}


async def test_invalid_cursor_is_422(app: FastAPI, admin: httpx.AsyncClient) -> None:
    await queued(admin)
    # A server error should show as the 500 the HRMS would get, not as an exception here.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://mailrelay.test", headers=admin.headers
    ) as client:
        answers = {
            name: await client.get(URL, params={"cursor": cursor})
            for name, cursor in INVALID_CURSORS.items()
        }
    not_refused = {
        name: f"{r.status_code} {r.text[:120]}"
        for name, r in answers.items()
        if r.status_code != 422 or r.json().get("code") != "invalid_cursor"
    }
    assert not_refused == {}
    for response in answers.values():
        assert_problem(response, 422, "invalid_cursor")


async def test_truncated_cursor_is_422(admin: httpx.AsyncClient) -> None:
    for n in range(3):
        await queued(admin, subject=f"Payslip {n}")
    cursor = (await admin.get(URL, params={"limit": 1})).json()["next_cursor"]
    assert cursor
    response = await admin.get(URL, params={"cursor": cursor[:-10]})
    assert_problem(response, 422, "invalid_cursor")


# --- cancel ---------------------------------------------------------------------------------


async def test_cancel_a_queued_message(admin: httpx.AsyncClient, runtime: Runtime) -> None:
    message = await queued(admin)
    cancelled = await admin.post(f"{URL}/{message['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["status"] == "cancelled"
    assert body["id"] == message["id"]
    assert body["message_id_header"] == message["message_id_header"]

    assert (await admin.get(f"{URL}/{message['id']}")).json()["status"] == "cancelled"
    [row] = await stored(runtime)
    assert row.status == MessageStatus.CANCELLED

    again = await admin.post(f"{URL}/{message['id']}/cancel")
    problem = assert_problem(again, 409, "message_not_cancellable")
    assert "cancelled" in problem["detail"]
    assert (await admin.get(f"{URL}/{message['id']}")).json()["status"] == "cancelled"


async def test_cancel_a_message_past_queued_is_409(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    for status in (MessageStatus.SENT, MessageStatus.SENDING, MessageStatus.FAILED):
        message = await queued(admin)
        await set_message(runtime, message["id"], status=status)
        cancel = await admin.post(f"{URL}/{message['id']}/cancel")
        problem = assert_problem(cancel, 409, "message_not_cancellable")
        assert status.value in problem["detail"]
        assert (await admin.get(f"{URL}/{message['id']}")).json()["status"] == status.value


async def test_cancel_unknown_or_foreign_message_is_404(admin: httpx.AsyncClient) -> None:
    assert_problem(await admin.post(f"{URL}/{uuid.uuid4()}/cancel"), 404, "message_not_found")
    globex = await queued(admin, "globex")
    assert_problem(await admin.post(f"{URL}/{globex['id']}/cancel"), 404, "message_not_found")
    fetched = await admin.get(f"/v1/tenants/globex/messages/{globex['id']}")
    assert fetched.json()["status"] == "queued"


# --- tenant isolation -----------------------------------------------------------------------


async def test_tenant_key_cannot_touch_another_tenants_messages(
    admin: httpx.AsyncClient, client: httpx.AsyncClient, make_key: KeyFactory, runtime: Runtime
) -> None:
    globex = await queued(admin, "globex")
    acme_key = {"Authorization": f"Bearer {await make_key('acme')}"}
    other = "/v1/tenants/globex/messages"

    forbidden = [
        await client.post(other, json=BODY, headers=acme_key),
        await client.get(other, headers=acme_key),
        await client.get(f"{other}/{globex['id']}", headers=acme_key),
        await client.post(f"{other}/{globex['id']}/cancel", headers=acme_key),
    ]
    for response in forbidden:
        assert_problem(response, 403, "tenant_forbidden")

    # Through its own tenant path the key does not find the other tenant's message either.
    mine = f"{URL}/{globex['id']}"
    assert_problem(await client.get(mine, headers=acme_key), 404, "message_not_found")
    assert_problem(await client.post(f"{mine}/cancel", headers=acme_key), 404, "message_not_found")

    [row] = await stored(runtime)
    assert str(row.id) == globex["id"]
    assert row.status == MessageStatus.QUEUED

    # Its own tenant works.
    own = await client.post(URL, json=BODY, headers=acme_key)
    assert own.status_code == 202
    listed = (await client.get(URL, headers=acme_key)).json()
    assert [m["id"] for m in listed["items"]] == [own.json()["id"]]
