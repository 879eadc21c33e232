"""The `mailrelay` command: migrate, apikey create / list / revoke, openapi, secrets rotate."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from app.crypto import SecretBox
from app.mailboxes.models import Mailbox
from tests.conftest import BACKENDS, make_database


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(params=BACKENDS)
def cli_env(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    url, drop = make_database(request.param, tmp_path)
    yield {"MAILRELAY_DATABASE_URL": url, "MAILRELAY_VAR_DIR": str(tmp_path / "var")}
    drop()


def test_apikey_life_cycle(cli_env: dict[str, str]) -> None:
    assert run_cli("migrate", env=cli_env).returncode == 0

    made = run_cli("apikey", "create", "--tenant", "acme", "--name", "hrms", env=cli_env)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("mr_") and "\n" not in token
    assert "shown once" in made.stderr

    listed = run_cli("apikey", "list", env=cli_env)
    key_id = token.removeprefix("mr_").split("_")[0]
    assert key_id in listed.stdout and "acme" in listed.stdout and "hrms" in listed.stdout
    assert token.split("_")[-1] not in listed.stdout  # the secret is never shown again

    assert run_cli("apikey", "revoke", key_id, env=cli_env).returncode == 0
    assert run_cli("apikey", "revoke", key_id, env=cli_env).returncode == 1

    refused = run_cli("apikey", "create", "--tenant", "bad tenant", env=cli_env)
    assert refused.returncode != 0


def test_secrets_rotate_reencrypts_under_the_new_key(cli_env: dict[str, str]) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    env = {**cli_env, "MAILRELAY_SECRET_KEYS": old}
    assert run_cli("migrate", env=env).returncode == 0

    from app.runtime import Runtime
    from app.settings import Settings

    url = env["MAILRELAY_DATABASE_URL"]

    async def store() -> None:
        runtime = Runtime.create(Settings(database_url=url, secret_keys=[old]))
        try:
            async with runtime.sessionmaker.begin() as session:
                mailbox = Mailbox(
                    id=uuid.uuid4(), tenant_id="acme", display_name="Acme", email="hr@acme.test"
                )
                context = mailbox.secret_context("smtp_password")
                mailbox.smtp_password_enc = runtime.secrets.encrypt("pw", context=context)
                session.add(mailbox)
        finally:
            await runtime.aclose()

    async def read(keys: list[str]) -> str:
        runtime = Runtime.create(Settings(database_url=url, secret_keys=keys))
        try:
            async with runtime.sessionmaker() as session:
                mailbox = await session.scalar(select(Mailbox))
            assert mailbox is not None and mailbox.smtp_password_enc is not None
            return SecretBox([k.encode() for k in keys]).decrypt(
                mailbox.smtp_password_enc, context=mailbox.secret_context("smtp_password")
            )
        finally:
            await runtime.aclose()

    asyncio.run(store())
    rotated = run_cli("secrets", "rotate", env={**env, "MAILRELAY_SECRET_KEYS": f"{new},{old}"})
    assert rotated.returncode == 0, rotated.stderr
    assert "re-encrypted 1" in rotated.stderr
    assert asyncio.run(read([new])) == "pw"  # the old key is no longer needed


def test_serve_migrates_sqlite_and_answers(tmp_path: Path) -> None:
    """`mailrelay serve` on a fresh SQLite file: migrates itself, serves /healthz and /docs."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "MAILRELAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/fresh.db",
        "MAILRELAY_VAR_DIR": str(tmp_path / "var"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = 30.0
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            import time

            start = time.monotonic()
            while True:
                try:
                    health = http.get("/healthz")
                    break
                except httpx.TransportError:
                    assert process.poll() is None, process.stdout.read() if process.stdout else ""
                    assert time.monotonic() - start < deadline
                    time.sleep(0.2)
            assert health.json() == {"status": "ok"}
            assert http.get("/readyz").json()["status"] == "ready"
            assert http.get("/docs").status_code == 200
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=15)
    assert "mailrelay apikey create" in output  # a fresh install says how to get a key
