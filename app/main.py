"""The application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app import __version__
from app.api import health, mailboxes, messages, metrics, oauth
from app.api.limits import BodyLimitMiddleware
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
        stop = asyncio.Event()
        worker = None
        if settings.run_worker_in_process:
            from app.outbox.worker import Worker

            worker = asyncio.create_task(Worker(runtime).run(stop), name="outbox-worker")
        try:
            yield
        finally:
            stop.set()
            if worker is not None:
                await worker
            await runtime.aclose()

    app = FastAPIOffline(
        title="mailrelay",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        redoc_url=None,
    )
    # Base64 attachments grow by a third; refuse anything larger before reading it all.
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_message_bytes * 4 // 3 + 1024**2)
    install_problem_handlers(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(mailboxes.router)
    app.include_router(messages.router)
    app.include_router(oauth.router)
    return app
