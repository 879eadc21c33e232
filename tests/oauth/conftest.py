"""OAuth fixtures: the fake Google and Microsoft servers on loopback, and the browser's part."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic import SecretStr

from app.settings import Settings
from tests.fixtures.providers import FakeProviders, ProviderServer
from tests.fixtures.smtpd import SmtpServer
from tests.outbox.conftest import default_relay, worker  # noqa: F401 (fixtures)

RETURN_URL = "https://hrms.test/settings/mail?tab=mailbox"


@pytest.fixture(scope="session")
def provider_server() -> Iterator[ProviderServer]:
    with ProviderServer() as server:
        yield server


@pytest.fixture
def fake(provider_server: ProviderServer) -> Iterator[FakeProviders]:
    provider_server.providers.reset()
    yield provider_server.providers
    provider_server.providers.reset()


@pytest.fixture
def settings(
    settings: Settings,
    provider_server: ProviderServer,
    default_relay: SmtpServer,  # noqa: F811
) -> Settings:
    overrides: dict[str, Any] = dict(provider_server.settings_overrides())
    for name in ("google_client_secret", "microsoft_client_secret"):
        overrides[name] = SecretStr(overrides[name])
    relay = f"smtp://127.0.0.1:{default_relay.port}?security=none"
    return settings.model_copy(
        update={
            **overrides,
            "default_smtp_url": SecretStr(relay),
            "oauth_return_origins": ["https://hrms.test"],
            "google_rate_per_minute": 600_000,
            "microsoft_rate_per_minute": 600_000,
        }
    )


async def browse_to_provider(url: str) -> str:
    """The browser follows the authorization URL; the fake consents and redirects back."""
    async with httpx.AsyncClient() as browser:
        response = await browser.get(url)
    assert response.status_code in (302, 303), response.text
    return response.headers["location"]


async def sign_in(
    admin: httpx.AsyncClient,
    tenant: str,
    provider: str,
    *,
    return_url: str | None = RETURN_URL,
) -> httpx.Response:
    """Start the flow by API, consent at the fake, come back to the relay's callback."""
    body = {"return_url": return_url} if return_url else {}
    started = await admin.post(f"/v1/tenants/{tenant}/mailbox/oauth/{provider}", json=body)
    assert started.status_code == 200, started.text
    callback = await browse_to_provider(started.json()["authorization_url"])
    parts = urlsplit(callback)
    assert parts.path == f"/v1/oauth/{provider}/callback"
    return await admin.get(f"{parts.path}?{parts.query}", headers={"Authorization": ""})


async def create_mailbox(admin: httpx.AsyncClient, tenant: str, email: str) -> None:
    response = await admin.post(
        f"/v1/tenants/{tenant}/mailbox", json={"display_name": "Acme HR", "email": email}
    )
    assert response.status_code == 201, response.text
