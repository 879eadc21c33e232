"""Shared fixtures: real databases (SQLite always, PostgreSQL when configured), the app, keys.

Every database test runs once per backend. The schema is built by `alembic upgrade head`, so each
run also tests the migrations. Tests commit for real (the services open their own transactions);
the tables are emptied after each test.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from sqlalchemy import delete
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.apikeys.service import create_api_key
from app.db import migrations
from app.db.registry import Model
from app.main import create_app
from app.runtime import Runtime
from app.settings import Settings
from tests.fixtures.smtpd import SmtpServer, TLSFiles, make_tls_files, settle_transports

POSTGRES_URL = os.environ.get("MAILRELAY_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", *(["postgres"] if POSTGRES_URL else [])]
TEST_KEY = Fernet.generate_key().decode()


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql(statement)
    finally:
        await engine.dispose()


def make_database(backend: str, directory: Path) -> tuple[str, Callable[[], None]]:
    """An empty database of `backend` and the function that drops it."""
    if backend == "sqlite":
        path = directory / f"{uuid.uuid4().hex}.db"
        return f"sqlite+aiosqlite:///{path}", lambda: None
    assert POSTGRES_URL is not None
    name = f"mailrelay_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(POSTGRES_URL, f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    return url, lambda: asyncio.run(_admin(POSTGRES_URL, f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database of each backend, migrated to head once per test session."""
    url, drop = make_database(request.param, tmp_path_factory.mktemp("db"))
    migrations.upgrade(url)
    yield url
    drop()


@pytest.fixture(autouse=True)
async def _settle_transports() -> AsyncIterator[None]:
    """Let closing TLS transports finish before the loop closes (else a ResourceWarning)."""
    yield
    await settle_transports()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def settings(database_url: str, tls_files: TLSFiles, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        secret_keys=[TEST_KEY],
        var_dir=tmp_path / "var",
        smtp_allowed_networks=["127.0.0.0/8"],
        smtp_ca_file=tls_files.ca_file,
        test_timeout=timedelta(seconds=3),
        smtp_timeout=timedelta(seconds=3),
        worker_in_process=False,  # tests drive `Worker` themselves
        retry_base=timedelta(milliseconds=50),
        retry_max=timedelta(milliseconds=300),
        worker_poll_interval=timedelta(milliseconds=50),
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app with its lifespan running; its tables are emptied afterwards."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        try:
            yield app
        finally:
            runtime: Runtime = app.state.runtime
            async with runtime.sessionmaker.begin() as session:
                for table in reversed(Model.metadata.sorted_tables):
                    await session.execute(delete(table))


@pytest.fixture
def runtime(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mailrelay.test") as http:
        yield http


KeyFactory = Callable[..., Awaitable[str]]


@pytest.fixture
def make_key(runtime: Runtime) -> KeyFactory:
    """`await make_key(tenant_id=None)`: a new API key's token."""

    async def make(tenant_id: str | None = None) -> str:
        async with runtime.sessionmaker.begin() as session:
            return (await create_api_key(session, tenant_id=tenant_id)).token

    return make


@pytest.fixture
async def admin(client: httpx.AsyncClient, make_key: KeyFactory) -> httpx.AsyncClient:
    """The client, authorised with a key for all tenants (the HRMS backend's)."""
    client.headers["Authorization"] = f"Bearer {await make_key()}"
    return client


SmtpServerFactory = Callable[..., SmtpServer]
TENANT_PASSWORD = "correct horse battery staple"


@pytest.fixture
def smtp_server(tls_files: TLSFiles) -> Iterator[SmtpServerFactory]:
    """`smtp_server(security=..., users=...)`: a started aiosmtpd server, stopped afterwards.

    Defaults: the test CA's certificate and one user, hr@acme.test, with TENANT_PASSWORD.
    """
    started: list[SmtpServer] = []

    def start(**options: Any) -> SmtpServer:
        options.setdefault("tls", tls_files)
        options.setdefault("users", {"hr@acme.test": TENANT_PASSWORD})
        server = SmtpServer(**options)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
