"""Send Test Mail against real SMTP servers (aiosmtpd, trustme certificates, raw stubs)."""

from __future__ import annotations

import logging
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from app.runtime import Runtime
from app.senders.netpolicy import NetworkPolicy
from tests.conftest import TENANT_PASSWORD
from tests.fixtures.smtpd import (
    free_port,
    make_untrusted_server_context,
    stub_server,
)

URL = "/v1/tenants/acme/mailbox"
PASSWORD = TENANT_PASSWORD

TEST_TIMEOUT = 3.0  # conftest's MAILRELAY_TEST_TIMEOUT


async def connect(admin: httpx.AsyncClient, port: int, security: str, **extra: Any) -> None:
    if (await admin.get(URL)).status_code == 404:
        created = await admin.post(
            URL, json={"display_name": "Acme HR — Personal", "email": "hr@acme.test"}
        )
        assert created.status_code == 201
    body = {"password": PASSWORD, "host": "127.0.0.1", "port": port, "security": security, **extra}
    response = await admin.put(f"{URL}/smtp", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "pending_test"


async def run_test_mail(admin: httpx.AsyncClient, **body: Any) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = await admin.post(f"{URL}/test", json=body)
    return response, time.monotonic() - start


def failed(response: httpx.Response, code: str) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["code"] == code, problem
    assert PASSWORD not in response.text
    return problem


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_starttls_with_right_password_activates(
    admin: httpx.AsyncClient, smtp_server: Any, mechanism: str
) -> None:
    server = smtp_server(security="starttls", auth_mechanisms=(mechanism,))
    await connect(admin, server.port, "starttls")

    response, _ = await run_test_mail(admin)
    assert response.status_code == 200, response.text
    mailbox = response.json()
    assert mailbox["status"] == "active"
    assert mailbox["activated_at"] is not None
    assert mailbox["last_error"] is None

    [received] = server.received
    assert received.login == "hr@acme.test"
    assert any(c.upper().startswith(f"AUTH {mechanism}") for c in server.commands)
    assert received.mail_from == "hr@acme.test"
    assert received.rcpt_tos == ["hr@acme.test"]
    message = received.message
    assert message["From"] == "Acme HR — Personal <hr@acme.test>"
    assert message["To"] == "hr@acme.test"
    assert message["Subject"] == "Test message from Acme HR — Personal"
    assert parsedate_to_datetime(message["Date"]).tzinfo is not None
    assert message["Message-ID"].startswith("<") and message["Message-ID"].endswith("@acme.test>")
    assert len(message.get_all("Message-ID")) == 1
    assert b"\r\nFrom: Acme HR =?utf-8?" in b"\r\n" + received.content  # RFC 2047 on the wire


async def test_implicit_tls_with_right_password_activates(
    admin: httpx.AsyncClient, smtp_server: Any
) -> None:
    server = smtp_server(security="tls")
    await connect(admin, server.port, "tls")
    response, _ = await run_test_mail(admin, to="someone@globex.test")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "active"
    [received] = server.received
    assert received.rcpt_tos == ["someone@globex.test"]
    assert received.login == "hr@acme.test"


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_wrong_password_keeps_state_and_records_error(
    admin: httpx.AsyncClient, smtp_server: Any, security: str
) -> None:
    server = smtp_server(security=security, users={"hr@acme.test": "another password"})
    await connect(admin, server.port, security)

    problem = failed((await run_test_mail(admin))[0], "smtp_auth_failed")
    assert problem["reply_code"] == 535
    mailbox = (await admin.get(URL)).json()
    assert mailbox["status"] == "pending_test"
    assert mailbox["last_error"]["code"] == "smtp_auth_failed"
    assert server.received == []


async def test_failed_test_leaves_an_active_mailbox_active(
    admin: httpx.AsyncClient, smtp_server: Any
) -> None:
    server = smtp_server(security="starttls")
    await connect(admin, server.port, "starttls")
    assert (await run_test_mail(admin))[0].status_code == 200
    server.set_password("hr@acme.test", "changed")
    failed((await run_test_mail(admin))[0], "smtp_auth_failed")
    mailbox = (await admin.get(URL)).json()
    assert mailbox["status"] == "active"
    assert mailbox["last_error"]["code"] == "smtp_auth_failed"


async def test_implicit_tls_client_on_starttls_port_fails_fast(
    admin: httpx.AsyncClient, smtp_server: Any
) -> None:
    server = smtp_server(security="starttls")
    await connect(admin, server.port, "tls")
    response, elapsed = await run_test_mail(admin)
    problem = failed(response, "smtp_tls_failed")
    assert "starttls" in problem["detail"]
    assert elapsed < TEST_TIMEOUT


async def test_starttls_client_on_implicit_tls_port_times_out_within_bound(
    admin: httpx.AsyncClient, smtp_server: Any
) -> None:
    server = smtp_server(security="tls")
    await connect(admin, server.port, "starttls")
    response, elapsed = await run_test_mail(admin)
    failed(response, "smtp_timeout")
    assert elapsed < TEST_TIMEOUT + 1.5


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_untrusted_certificate_is_a_tls_failure(
    admin: httpx.AsyncClient, smtp_server: Any, security: str
) -> None:
    server = smtp_server(security=security, server_context=make_untrusted_server_context())
    await connect(admin, server.port, security)
    problem = failed((await run_test_mail(admin))[0], "smtp_tls_failed")
    assert "certificate" in problem["detail"]
    assert not any(c.upper().startswith("AUTH") for c in server.commands)


async def test_missing_starttls_never_sends_auth_in_plaintext(
    admin: httpx.AsyncClient, smtp_server: Any
) -> None:
    server = smtp_server(security="starttls", offer_starttls=False)
    await connect(admin, server.port, "starttls")
    failed((await run_test_mail(admin))[0], "smtp_tls_failed")
    assert server.commands, "the client did talk to the server"
    assert not any(c.upper().startswith("AUTH") for c in server.commands)
    assert server.received == []


async def test_closed_port_is_a_connect_failure(admin: httpx.AsyncClient) -> None:
    await connect(admin, free_port(), "starttls")
    failed((await run_test_mail(admin))[0], "smtp_connect_failed")


async def test_silent_server_times_out_within_bound(admin: httpx.AsyncClient) -> None:
    async with stub_server("silent") as port:
        await connect(admin, port, "starttls")
        response, elapsed = await run_test_mail(admin)
    failed(response, "smtp_timeout")
    assert elapsed < TEST_TIMEOUT + 1.5


async def test_421_greeting_is_reported_with_its_code(admin: httpx.AsyncClient) -> None:
    async with stub_server("greet_421") as port:
        await connect(admin, port, "starttls")
        problem = failed((await run_test_mail(admin))[0], "smtp_rejected")
    assert problem["reply_code"] == 421


async def test_refused_recipient_is_smtp_rejected_with_reply_code(
    admin: httpx.AsyncClient, smtp_server: Any
) -> None:
    server = smtp_server(security="starttls")
    server.rcpt_replies["nobody@acme.test"] = "550 5.1.1 no such user"
    await connect(admin, server.port, "starttls")
    problem = failed((await run_test_mail(admin, to="nobody@acme.test"))[0], "smtp_rejected")
    assert problem["reply_code"] == 550
    assert (await admin.get(URL)).json()["status"] == "pending_test"


async def test_host_leaving_the_allow_list_is_refused_at_send_time(
    admin: httpx.AsyncClient, smtp_server: Any, runtime: Runtime
) -> None:
    server = smtp_server(security="starttls")
    await connect(admin, server.port, "starttls")
    runtime.network_policy = NetworkPolicy(allowed_networks=())
    failed((await run_test_mail(admin))[0], "smtp_host_not_allowed")
    assert server.commands == []


async def test_test_without_connection_is_409(admin: httpx.AsyncClient) -> None:
    await admin.post(URL, json={"display_name": "Acme", "email": "hr@acme.test"})
    response = await admin.post(f"{URL}/test")
    assert response.status_code == 409
    assert response.json()["code"] == "mailbox_not_connected"


async def test_password_never_reaches_logs_or_responses(
    admin: httpx.AsyncClient, smtp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = smtp_server(security="starttls", users={"hr@acme.test": "other"})
    await connect(admin, server.port, "starttls")
    responses = [await admin.get(URL), (await run_test_mail(admin))[0]]
    server.set_password("hr@acme.test", PASSWORD)
    responses.append((await run_test_mail(admin))[0])
    assert responses[-1].status_code == 200
    for response in responses:
        assert PASSWORD not in response.text
    assert caplog.records
    for record in caplog.records:
        assert PASSWORD not in record.getMessage()
        assert PASSWORD not in str(record.__dict__)
