"""A mailbox's access token: refreshed shortly before expiry, one refresh at a time everywhere.

In a process, a lock serialises callers. Across processes, `refresh_lock_until` is taken with a
compare-and-swap on `token_version`; the winner refreshes and bumps the version, the others wait
and read its token. Microsoft rotates refresh tokens: the newest is stored on every refresh.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from authlib.integrations.httpx_client import AsyncOAuth2Client
from sqlalchemy import select, update

from app.db.base import utcnow
from app.mailboxes.models import Mailbox
from app.oauth.alerts import clear_alert, raise_alert
from app.oauth.errors import classify_token_error
from app.oauth.providers import OAuthProvider
from app.runtime import Runtime
from app.senders.base import AppConfigError, CredentialsError, SendError, TransientError

log = logging.getLogger(__name__)

ACCESS_TOKEN = "oauth_access_token"  # noqa: S105 (a field name)
REFRESH_TOKEN = "oauth_refresh_token"  # noqa: S105 (a field name)
LEEWAY = timedelta(seconds=60)
REFRESH_LOCK = timedelta(seconds=30)
HTTP_TIMEOUT = 15.0


def expires_at(token: dict[str, Any], now: datetime) -> datetime:
    """When to refresh: a minute before the token expires, or halfway for short-lived ones."""
    if "expires_in" in token:
        lifetime = timedelta(seconds=int(token["expires_in"]))
    elif "expires_at" in token:
        lifetime = datetime.fromtimestamp(int(token["expires_at"]), tz=now.tzinfo) - now
    else:
        lifetime = timedelta(hours=1)
    return now + lifetime - min(LEEWAY, lifetime / 2)


class MailboxTokens:
    """The access tokens of one mailbox, for its drivers."""

    def __init__(self, runtime: Runtime, provider: OAuthProvider, mailbox_id: uuid.UUID) -> None:
        self.runtime = runtime
        self.provider = provider
        self.mailbox_id = mailbox_id
        self._lock = asyncio.Lock()

    async def access_token(self, *, stale: str | None = None) -> str:
        """A valid access token; with `stale` (one the API refused), a fresher one than that."""
        async with self._lock:
            for _ in range(200):  # at most ~40 s waiting for another worker's refresh
                mailbox = await self._load()
                token = self._decrypt(mailbox, ACCESS_TOKEN, mailbox.oauth_access_token_enc)
                fresh = (mailbox.oauth_expires_at or utcnow()) > utcnow()
                if token and fresh and token != stale:
                    return token
                if await self._take_refresh_lock(mailbox):
                    return await self._refresh(mailbox)
                await asyncio.sleep(0.2)
            raise TransientError("oauth_refresh_busy", "another worker's token refresh is stuck")

    async def _load(self) -> Mailbox:
        async with self.runtime.sessionmaker() as session:
            mailbox = await session.scalar(select(Mailbox).where(Mailbox.id == self.mailbox_id))
        if mailbox is None or mailbox.provider != self.provider.name:
            raise CredentialsError("oauth_not_connected", "the mailbox is no longer signed in")
        return mailbox

    def _decrypt(self, mailbox: Mailbox, field: str, value: bytes | None) -> str | None:
        if value is None:
            return None
        from app.crypto import SecretDecryptError

        try:
            return self.runtime.secrets.decrypt(value, context=mailbox.secret_context(field))
        except SecretDecryptError as exc:
            raise AppConfigError(
                "mailbox_secret_unreadable",
                "the stored token cannot be decrypted with MAILRELAY_SECRET_KEYS",
            ) from exc

    async def _take_refresh_lock(self, mailbox: Mailbox) -> bool:
        now = utcnow()
        async with self.runtime.sessionmaker.begin() as session:
            result = await session.execute(
                update(Mailbox)
                .where(
                    Mailbox.id == mailbox.id,
                    Mailbox.token_version == mailbox.token_version,
                    (Mailbox.refresh_lock_until.is_(None)) | (Mailbox.refresh_lock_until < now),
                )
                .values(refresh_lock_until=now + REFRESH_LOCK)
                .execution_options(synchronize_session=False)
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def _refresh(self, mailbox: Mailbox) -> str:
        refresh_token = self._decrypt(mailbox, REFRESH_TOKEN, mailbox.oauth_refresh_token_enc)
        if not refresh_token:
            await self._release(mailbox)
            raise CredentialsError("oauth_token_revoked", "no refresh token is stored")
        provider = self.provider
        try:
            async with AsyncOAuth2Client(
                provider.client_id,
                provider.client_secret,
                token_endpoint_auth_method="client_secret_post",  # noqa: S106 (a method name)
                timeout=HTTP_TIMEOUT,
            ) as client:
                token: dict[str, Any] = dict(
                    await client.refresh_token(provider.token_url, refresh_token=refresh_token)
                )
        except Exception as exc:
            await self._release(mailbox)
            error = classify_token_error(exc, provider=provider.name)
            await self._note_failure(error)
            raise error from exc
        now = utcnow()
        access = str(token["access_token"])
        values: dict[str, Any] = {
            "oauth_access_token_enc": self.runtime.secrets.encrypt(
                access, context=mailbox.secret_context(ACCESS_TOKEN)
            ),
            "oauth_expires_at": expires_at(token, now),
            "token_version": mailbox.token_version + 1,
            "refresh_lock_until": None,
        }
        new_refresh = token.get("refresh_token")
        if new_refresh and new_refresh != refresh_token:  # Microsoft rotates on every refresh
            values["oauth_refresh_token_enc"] = self.runtime.secrets.encrypt(
                str(new_refresh), context=mailbox.secret_context(REFRESH_TOKEN)
            )
        async with self.runtime.sessionmaker.begin() as session:
            await session.execute(
                update(Mailbox)
                .where(Mailbox.id == mailbox.id, Mailbox.token_version == mailbox.token_version)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            await clear_alert(session, provider.name)
        log.info("access token refreshed", extra={"tenant_id": mailbox.tenant_id})
        return access

    async def _release(self, mailbox: Mailbox) -> None:
        async with self.runtime.sessionmaker.begin() as session:
            await session.execute(
                update(Mailbox)
                .where(Mailbox.id == mailbox.id, Mailbox.token_version == mailbox.token_version)
                .values(refresh_lock_until=None)
                .execution_options(synchronize_session=False)
            )

    async def _note_failure(self, error: SendError) -> None:
        if isinstance(error, AppConfigError):
            async with self.runtime.sessionmaker.begin() as session:
                await raise_alert(session, self.provider.name, error.code, error.detail)
