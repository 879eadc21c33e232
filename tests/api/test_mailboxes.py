"""Mailbox create / get / patch / delete, SMTP settings and their validation."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

URL = "/v1/tenants/acme/mailbox"
MAILBOX = {"display_name": "Acme HR", "email": "hr@acme.test"}
SMTP = {"password": "s3cret-pw", "host": "127.0.0.1", "port": 2525, "security": "starttls"}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body


async def test_create_get_patch_delete(admin: httpx.AsyncClient) -> None:
    assert_problem(await admin.get(URL), 404, "mailbox_not_found")

    created = await admin.post(URL, json=MAILBOX)
    assert created.status_code == 201
    body = created.json()
    assert body["tenant_id"] == "acme"
    assert body["status"] == "not_configured"
    assert body["provider"] is None
    assert body["smtp"] is None and body["oauth"] is None
    assert body["notify_emails"] == ["hr@acme.test"]
    assert body["available_providers"] == ["smtp"]
    assert body["last_error"] is None

    assert (await admin.get(URL)).json() == body

    patched = await admin.patch(
        URL, json={"display_name": "Acme People", "notify_emails": ["admin@acme.test"]}
    )
    assert patched.status_code == 200
    assert patched.json()["display_name"] == "Acme People"
    assert patched.json()["notify_emails"] == ["admin@acme.test"]
    assert patched.json()["email"] == "hr@acme.test"

    reset = await admin.patch(URL, json={"notify_emails": []})
    assert reset.json()["notify_emails"] == ["hr@acme.test"]

    deleted = await admin.delete(URL)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_problem(await admin.get(URL), 404, "mailbox_not_found")
    assert_problem(await admin.delete(URL), 404, "mailbox_not_found")


async def test_second_create_conflicts(admin: httpx.AsyncClient) -> None:
    assert (await admin.post(URL, json=MAILBOX)).status_code == 201
    assert_problem(await admin.post(URL, json=MAILBOX), 409, "mailbox_exists")


async def test_available_providers_follow_configuration(
    admin: httpx.AsyncClient, runtime: Any
) -> None:
    runtime.settings.google_client_id = "google-client"
    created = await admin.post(URL, json=MAILBOX)
    assert created.json()["available_providers"] == ["smtp", "google"]


@pytest.mark.parametrize(
    "body",
    [
        {"display_name": "Acme\r\nBcc: victim@evil.test", "email": "hr@acme.test"},
        {"display_name": "Acme\x00", "email": "hr@acme.test"},
        {"display_name": "Acme", "email": "hr@acme.test\r\nBcc: victim@evil.test"},
        {"display_name": "Acme", "email": "not-an-address"},
        {"display_name": "Acme", "email": "hr@"},
        {"display_name": "", "email": "hr@acme.test"},
        {"display_name": "Acme", "email": "hr@acme.test", "notify_emails": ["bad"]},
        {"display_name": "Acme", "email": "hr@acme.test", "unknown": 1},
        {"email": "hr@acme.test"},
    ],
)
async def test_invalid_mailbox_is_422_and_nothing_is_stored(
    admin: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    problem = assert_problem(await admin.post(URL, json=body), 422, "validation_error")
    assert problem["errors"]
    assert_problem(await admin.get(URL), 404, "mailbox_not_found")


async def test_body_that_is_not_json_is_422(admin: httpx.AsyncClient) -> None:
    response = await admin.post(
        URL, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 422, "validation_error")


@pytest.mark.parametrize("tenant", ["", "-acme", "a" * 65, "acme corp", "ac%2Fme"])
async def test_malformed_tenant_id_is_refused(admin: httpx.AsyncClient, tenant: str) -> None:
    response = await admin.post(f"/v1/tenants/{tenant}/mailbox", json=MAILBOX)
    assert response.status_code in (404, 422)
    assert response.headers["content-type"] == "application/problem+json"


async def test_reserved_domains_are_refused_in_production() -> None:
    from app.senders.addresses import normalize_address

    assert normalize_address("hr@acme.test", allow_reserved=True) == "hr@acme.test"
    assert normalize_address("hr@localhost", allow_reserved=True) == "hr@localhost"
    for address in ("hr@acme.test", "hr@localhost", "hr@mail.invalid"):
        with pytest.raises(ValueError, match=r"special-use|period"):
            normalize_address(address, allow_reserved=False)
    assert normalize_address("HR@Example.COM", allow_reserved=False) == "HR@example.com"


async def test_smtp_settings_make_the_mailbox_pending_test(admin: httpx.AsyncClient) -> None:
    await admin.post(URL, json=MAILBOX)
    response = await admin.put(f"{URL}/smtp", json=SMTP)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "pending_test"
    assert body["provider"] == "smtp"
    assert body["smtp"] == {
        "username": "hr@acme.test",
        "host": "127.0.0.1",
        "port": 2525,
        "security": "starttls",
    }
    assert "s3cret-pw" not in response.text
    assert "s3cret-pw" not in (await admin.get(URL)).text


@pytest.mark.parametrize(
    ("port", "use_ssl", "security"),
    [(465, True, "tls"), (587, True, "starttls"), (2525, True, "starttls"), (25, False, "none")],
)
async def test_use_ssl_maps_to_security(
    admin: httpx.AsyncClient, port: int, use_ssl: bool, security: str
) -> None:
    await admin.post(URL, json=MAILBOX)
    body = {"password": "pw", "host": "127.0.0.1", "port": port, "use_ssl": use_ssl}
    response = await admin.put(f"{URL}/smtp", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["smtp"]["security"] == security


@pytest.mark.parametrize(
    "change",
    [
        {"port": 0},
        {"port": 70000},
        {"host": "smtp.acme.test\r\nRCPT TO:<x@y.test>"},
        {"host": "bad host"},
        {"host": "under_score..test"},
        {"password": "pw\r\nQUIT"},
        {"password": ""},
        {"username": "hr\n@acme.test"},
        {"security": "ssl"},
        {"use_ssl": True},
        {"security": None},
    ],
)
async def test_invalid_smtp_settings_are_422(
    admin: httpx.AsyncClient, change: dict[str, Any]
) -> None:
    await admin.post(URL, json=MAILBOX)
    response = await admin.put(f"{URL}/smtp", json={**SMTP, **change})
    problem = assert_problem(response, 422, "validation_error")
    assert "s3cret-pw" not in response.text
    assert all("input" not in error for error in problem["errors"])
    assert (await admin.get(URL)).json()["status"] == "not_configured"


async def test_host_resolving_to_loopback_is_refused_without_allow_list(
    admin: httpx.AsyncClient, runtime: Any
) -> None:
    await admin.post(URL, json=MAILBOX)
    runtime.network_policy = type(runtime.network_policy)(allowed_networks=())
    for host in ("localhost", "127.0.0.1", "::ffff:127.0.0.1"):
        response = await admin.put(f"{URL}/smtp", json={**SMTP, "host": host, "port": 587})
        assert_problem(response, 422, "smtp_host_not_allowed")
    assert (await admin.get(URL)).json()["status"] == "not_configured"


async def test_plaintext_and_odd_ports_only_for_allow_listed_hosts(
    admin: httpx.AsyncClient, runtime: Any
) -> None:
    await admin.post(URL, json=MAILBOX)
    policy = type(runtime.network_policy)
    runtime.network_policy = policy(allowed_networks=())
    response = await admin.put(f"{URL}/smtp", json={**SMTP, "host": "8.8.8.8", "port": 2526})
    assert_problem(response, 422, "smtp_port_not_allowed")
    response = await admin.put(
        f"{URL}/smtp", json={**SMTP, "host": "8.8.8.8", "port": 25, "security": "none"}
    )
    assert_problem(response, 422, "smtp_plaintext_not_allowed")


async def test_unresolvable_host_is_422(admin: httpx.AsyncClient) -> None:
    await admin.post(URL, json=MAILBOX)
    response = await admin.put(f"{URL}/smtp", json={**SMTP, "host": "no-such-host.invalid"})
    assert_problem(response, 422, "smtp_host_not_found")


async def test_new_settings_move_an_active_mailbox_back_to_pending_test(
    admin: httpx.AsyncClient, runtime: Any
) -> None:
    from sqlalchemy import update

    from app.mailboxes.models import Mailbox

    await admin.post(URL, json=MAILBOX)
    await admin.put(f"{URL}/smtp", json=SMTP)
    async with runtime.sessionmaker.begin() as session:
        await session.execute(update(Mailbox).values(status="active"))
    response = await admin.put(f"{URL}/smtp", json={**SMTP, "port": 2526})
    assert response.json()["status"] == "pending_test"
