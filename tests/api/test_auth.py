"""API keys: no key, a wrong or revoked key, and a key of another tenant are all refused."""

from __future__ import annotations

import httpx
import pytest

from app.apikeys.service import revoke_api_key
from app.runtime import Runtime
from tests.conftest import KeyFactory

MAILBOX = {"display_name": "Acme HR", "email": "hr@acme.test"}
SMTP = {"password": "pw", "host": "127.0.0.1", "port": 2525, "security": "starttls"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwdw=="},
        {"Authorization": "Bearer mr_nope_nope"},
        {"Authorization": "Bearer not-a-key"},
    ],
)
async def test_missing_or_unknown_key_is_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/v1/tenants/acme/mailbox", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["code"] == "unauthorized"


async def test_right_key_id_with_wrong_secret_is_401(
    client: httpx.AsyncClient, make_key: KeyFactory
) -> None:
    token = await make_key()
    forged = token[: token.rindex("_") + 1] + "x" * 43
    response = await client.get("/v1/tenants/acme/mailbox", headers=bearer(forged))
    assert response.status_code == 401


async def test_revoked_key_is_401(
    client: httpx.AsyncClient, make_key: KeyFactory, runtime: Runtime
) -> None:
    token = await make_key()
    assert (await client.get("/v1/tenants/acme/mailbox", headers=bearer(token))).status_code == 404
    key_id = token.removeprefix("mr_").split("_")[0]
    async with runtime.sessionmaker.begin() as session:
        assert await revoke_api_key(session, key_id=key_id)
    response = await client.get("/v1/tenants/acme/mailbox", headers=bearer(token))
    assert response.status_code == 401


async def test_tenant_key_cannot_see_or_change_another_tenant(
    client: httpx.AsyncClient, make_key: KeyFactory
) -> None:
    acme, globex = bearer(await make_key("acme")), bearer(await make_key("globex"))
    created = await client.post("/v1/tenants/acme/mailbox", json=MAILBOX, headers=acme)
    assert created.status_code == 201

    attempts = [
        ("GET", "/v1/tenants/acme/mailbox", None),
        ("PATCH", "/v1/tenants/acme/mailbox", {"display_name": "Hijacked"}),
        ("PUT", "/v1/tenants/acme/mailbox/smtp", SMTP),
        ("POST", "/v1/tenants/acme/mailbox/test", {}),
        ("DELETE", "/v1/tenants/acme/mailbox", None),
        ("POST", "/v1/tenants/acme/mailbox", MAILBOX),
    ]
    for method, path, body in attempts:
        response = await client.request(method, path, json=body, headers=globex)
        assert response.status_code == 403, (method, path)
        assert response.json()["code"] == "tenant_forbidden"

    after = await client.get("/v1/tenants/acme/mailbox", headers=acme)
    assert after.status_code == 200
    assert after.json()["display_name"] == "Acme HR"
    assert after.json()["status"] == "not_configured"


async def test_all_tenants_key_reaches_every_tenant(
    client: httpx.AsyncClient, make_key: KeyFactory
) -> None:
    admin = bearer(await make_key())
    for tenant in ("acme", "globex"):
        response = await client.post(f"/v1/tenants/{tenant}/mailbox", json=MAILBOX, headers=admin)
        assert response.status_code == 201
        assert response.json()["tenant_id"] == tenant
