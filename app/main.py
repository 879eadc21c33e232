"""The application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app import __version__
from app.api import health, mailboxes
from app.api.problems import install_problem_handlers
from app.runtime import Runtime
from app.settings import Settings, get_settings

DESCRIPTION = """\
The HRMS mail service. Each tenant (customer company) may connect its own mailbox by SMTP,
Google or Microsoft; a passing test mail activates it, and from then on the tenant's mail leaves
from its own address. Every error is `application/problem+json` with a stable `code`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """A configured app; the runtime (engine, keys) is built at startup and closed at shutdown."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime.create(settings)
        app.state.runtime = runtime
        try:
            yield
        finally:
            await runtime.aclose()

    app = FastAPIOffline(
        title="mailrelay",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        redoc_url=None,
    )
    install_problem_handlers(app)
    app.include_router(health.router)
    app.include_router(mailboxes.router)
    return app
