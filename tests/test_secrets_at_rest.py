"""Secrets at rest: the SMTP password is never stored in plaintext, and is bound to its mailbox."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url

from app.crypto import SecretBox, SecretDecryptError
from app.db.registry import Model
from app.mailboxes.models import Mailbox
from app.runtime import Runtime

PASSWORD = "pl41ntext-canary-Zq9"
SMTP = {"password": PASSWORD, "host": "127.0.0.1", "port": 2525, "security": "starttls"}


async def stored_bytes(runtime: Runtime) -> bytes:
    """Everything the database holds for our tables, as bytes."""
    url = make_url(runtime.settings.database_url)
    if url.get_backend_name() == "sqlite":
        await runtime.engine.dispose()  # checkpoint nothing away: read the file and its WAL
        path = Path(url.database or "")
        return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    chunks = []
    async with runtime.engine.connect() as connection:
        for table in Model.metadata.sorted_tables:
            rows = await connection.execute(text(f"SELECT t::text FROM {table.name} t"))
            chunks.extend(row[0].encode() for row in rows)
    return b"\n".join(chunks)


async def test_password_is_encrypted_in_the_database(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    for tenant in ("acme", "globex"):
        await admin.post(
            f"/v1/tenants/{tenant}/mailbox", json={"display_name": "HR", "email": "hr@acme.test"}
        )
        response = await admin.put(f"/v1/tenants/{tenant}/mailbox/smtp", json=SMTP)
        assert response.status_code == 200
        assert PASSWORD not in response.text

    raw = await stored_bytes(runtime)
    assert b"globex" in raw and b"127.0.0.1" in raw, "the scan sees the stored rows"
    assert PASSWORD.encode() not in raw
    assert PASSWORD.encode().hex().encode() not in raw  # nor as bytea hex

    async with runtime.sessionmaker() as session:
        mailboxes = list(await session.scalars(select(Mailbox).order_by(Mailbox.tenant_id)))
    for mailbox in mailboxes:
        assert mailbox.smtp_password_enc is not None
        context = mailbox.secret_context("smtp_password")
        assert runtime.secrets.decrypt(mailbox.smtp_password_enc, context=context) == PASSWORD
    assert mailboxes[0].smtp_password_enc != mailboxes[1].smtp_password_enc


async def test_a_password_copied_to_another_mailbox_does_not_decrypt(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    for tenant in ("acme", "globex"):
        await admin.post(
            f"/v1/tenants/{tenant}/mailbox", json={"display_name": "HR", "email": "hr@acme.test"}
        )
    await admin.put("/v1/tenants/acme/mailbox/smtp", json=SMTP)
    await admin.put("/v1/tenants/globex/mailbox/smtp", json={**SMTP, "password": "other"})
    async with runtime.sessionmaker.begin() as session:
        acme = await session.scalar(select(Mailbox).where(Mailbox.tenant_id == "acme"))
        assert acme is not None
        await session.execute(
            update(Mailbox)
            .where(Mailbox.tenant_id == "globex")
            .values(smtp_password_enc=acme.smtp_password_enc)
        )

    response = await admin.post("/v1/tenants/globex/mailbox/test")
    assert response.status_code == 409
    assert response.json()["code"] == "mailbox_secret_unreadable"


def test_unknown_key_and_wrong_context_are_refused() -> None:
    from cryptography.fernet import Fernet

    box = SecretBox([Fernet.generate_key()])
    token = box.encrypt("pw", context="mailbox:1:smtp_password")
    assert box.decrypt(token, context="mailbox:1:smtp_password") == "pw"
    with pytest.raises(SecretDecryptError):
        box.decrypt(token, context="mailbox:2:smtp_password")
    with pytest.raises(SecretDecryptError):
        SecretBox([Fernet.generate_key()]).decrypt(token, context="mailbox:1:smtp_password")
