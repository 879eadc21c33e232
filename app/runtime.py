"""What a process holds for its lifetime: settings, the engine, keys, TLS and network policy.

The API (`app.main`) and the CLI build one `Runtime` and hand it to the services, so the worker
and the HTTP handlers share the same code paths.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.crypto import SecretBox
from app.db.session import create_engine, create_sessionmaker
from app.senders.addresses import address_policy
from app.senders.netpolicy import NetworkPolicy
from app.senders.smtp import make_tls_context
from app.settings import Settings


@dataclass
class Runtime:
    """Process-wide resources, made once and closed once."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    secrets: SecretBox
    tls_context: ssl.SSLContext
    network_policy: NetworkPolicy
    # One client for every HTTP provider (Gmail, Graph, userinfo): pooled connections.
    http: httpx.AsyncClient
    # Set by intake so that an in-process worker starts at once instead of at its next poll.
    outbox_wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        address_policy.allow_reserved = not settings.is_production
        engine = create_engine(settings)
        return cls(
            settings=settings,
            engine=engine,
            sessionmaker=create_sessionmaker(engine),
            secrets=SecretBox.from_settings(settings),
            tls_context=make_tls_context(settings.smtp_ca_file),
            network_policy=NetworkPolicy(
                allowed_networks=settings.smtp_allowed_networks,
                dns_timeout=settings.dns_timeout.total_seconds(),
            ),
            http=httpx.AsyncClient(
                timeout=httpx.Timeout(settings.smtp_timeout.total_seconds(), connect=10.0),
                follow_redirects=False,
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            ),
        )

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.engine.dispose()
