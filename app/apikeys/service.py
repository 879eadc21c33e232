"""Make, list, revoke and verify API keys.

A key reads `mr_<key_id>_<secret>`: the key id finds the row, the secret is compared by hash.
Secrets carry 256 random bits, so a plain SHA-256 is the right hash (no need to slow guessing).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.apikeys.models import ApiKey
from app.db.base import utcnow
from app.mailboxes.tenants import validate_tenant_id

PREFIX = "mr_"


@dataclass(frozen=True)
class NewApiKey:
    """A freshly made key: the only moment its full value is known."""

    record: ApiKey
    token: str


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key bound to one tenant, or to all (`tenant_id` None)."""

    key_id: str
    tenant_id: str | None

    def may_access(self, tenant_id: str) -> bool:
        return self.tenant_id is None or self.tenant_id == tenant_id


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_api_key(
    session: AsyncSession, *, tenant_id: str | None = None, name: str = ""
) -> NewApiKey:
    if tenant_id is not None:
        tenant_id = validate_tenant_id(tenant_id)
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    record = ApiKey(key_id=key_id, secret_hash=_hash(secret), tenant_id=tenant_id, name=name)
    session.add(record)
    await session.flush()
    return NewApiKey(record=record, token=f"{PREFIX}{key_id}_{secret}")


async def list_api_keys(session: AsyncSession) -> list[ApiKey]:
    return list(await session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


async def revoke_api_key(session: AsyncSession, *, key_id: str) -> bool:
    """Revoke by key id (the part after `mr_`); False when no active key has that id."""
    record = await session.scalar(
        select(ApiKey).where(ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None))
    )
    if record is None:
        return False
    record.revoked_at = utcnow()
    await session.flush()
    return True


async def authenticate(session: AsyncSession, token: str) -> Principal | None:
    """The principal behind `token`, or None for a malformed, unknown or revoked key."""
    if not token.startswith(PREFIX):
        return None
    key_id, sep, secret = token[len(PREFIX) :].partition("_")
    if not sep or not key_id or not secret:
        return None
    record = await session.scalar(
        select(ApiKey).where(ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None))
    )
    if record is None or not hmac.compare_digest(record.secret_hash, _hash(secret)):
        return None
    return Principal(key_id=record.key_id, tenant_id=record.tenant_id)
