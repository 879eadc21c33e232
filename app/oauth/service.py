"""Sign-in with Google or Microsoft: start (authorization URL) and finish (callback).

The `state` is 256 random bits, stored only as its SHA-256 with the tenant, the provider, the
encrypted PKCE verifier and the return URL; it is used once and expires after ten minutes. The
redirect URI is built from `MAILRELAY_PUBLIC_URL` alone. No transaction is open while the relay
talks to the provider.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.crypto import SecretDecryptError
from app.db.base import utcnow
from app.errors import ConflictError, InvalidInputError, RelayError
from app.mailboxes.models import Mailbox, Provider
from app.mailboxes.service import clear_smtp, get_mailbox, mark_reconfigured
from app.oauth.alerts import clear_alert, raise_alert
from app.oauth.errors import classify_token_error
from app.oauth.models import OAuthState
from app.oauth.providers import OAuthProvider, configured_providers, has_scope
from app.oauth.tokens import ACCESS_TOKEN, HTTP_TIMEOUT, REFRESH_TOKEN, expires_at
from app.runtime import Runtime
from app.senders.base import AppConfigError, SendError
from app.settings import Settings

log = logging.getLogger(__name__)

STATE_TTL = timedelta(minutes=10)


@dataclass(frozen=True)
class CallbackResult:
    """Where the browser goes next, and what to tell it."""

    return_url: str | None
    code: str | None  # None: authorized

    @property
    def redirect_url(self) -> str | None:
        if self.return_url is None:
            return None
        result = (
            {"result": "authorized"}
            if self.code is None
            else {
                "result": "error",
                "code": self.code,
            }
        )
        parts = urlsplit(self.return_url)
        query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), *result.items()])
        return urlunsplit(parts._replace(query=query))


def redirect_uri(settings: Settings, provider: str) -> str:
    return f"{settings.public_url}/v1/oauth/{provider}/callback"


def provider_or_error(settings: Settings, name: str) -> OAuthProvider:
    provider = configured_providers(settings).get(Provider(name))
    if provider is None:
        raise ConflictError(
            "provider_not_configured",
            f"{name} sign-in is not configured on this relay (see available_providers).",
        )
    return provider


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_return_url(settings: Settings, return_url: str | None) -> None:
    """Only the configured origins (default: the relay's own): no open redirect."""
    if return_url is None:
        return
    parts = urlsplit(return_url)
    allowed = {_origin(o) for o in settings.oauth_return_origins} or {_origin(settings.public_url)}
    if parts.scheme not in ("http", "https") or _origin(return_url) not in allowed:
        raise InvalidInputError(
            "return_url_not_allowed",
            "return_url must be on an origin listed in MAILRELAY_OAUTH_RETURN_ORIGINS.",
        )


def _client(provider: OAuthProvider, settings: Settings) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        provider.client_id,
        provider.client_secret,
        scope=" ".join(provider.scopes),
        redirect_uri=redirect_uri(settings, provider.name),
        code_challenge_method="S256",  # set here, or Authlib leaves the challenge out
        token_endpoint_auth_method="client_secret_post",  # noqa: S106 (a method name)
        timeout=HTTP_TIMEOUT,
    )


def _hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


async def start_authorization(
    session: AsyncSession,
    runtime: Runtime,
    *,
    tenant_id: str,
    provider_name: str,
    return_url: str | None,
) -> tuple[str, datetime]:
    """The provider's authorization URL for this tenant's mailbox, valid for ten minutes."""
    settings = runtime.settings
    provider = provider_or_error(settings, provider_name)
    check_return_url(settings, return_url)
    await get_mailbox(session, tenant_id)
    state = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)
    state_hash = _hash(state)
    now = utcnow()
    session.add(
        OAuthState(
            state_hash=state_hash,
            tenant_id=tenant_id,
            provider=provider.name,
            code_verifier_enc=runtime.secrets.encrypt(
                verifier, context=f"oauth_state:{state_hash}"
            ),
            return_url=return_url,
            created_at=now,
            expires_at=now + STATE_TTL,
        )
    )
    await session.execute(delete(OAuthState).where(OAuthState.expires_at < now))
    async with _client(provider, settings) as client:
        url, _ = client.create_authorization_url(
            provider.authorize_url,
            state=state,
            code_verifier=verifier,
            **provider.authorize_params,
        )
    return str(url), now + STATE_TTL


async def finish_authorization(
    runtime: Runtime,
    *,
    provider_name: str,
    code: str | None,
    state: str | None,
    error: str | None,
) -> CallbackResult:
    """Redeem the code, check the grant, store the tokens; never raises for the browser."""
    settings = runtime.settings
    if not state:
        return CallbackResult(None, "oauth_state_invalid")
    async with runtime.sessionmaker.begin() as session:
        pending = await session.scalar(
            select(OAuthState).where(OAuthState.state_hash == _hash(state)).with_for_update()
        )
        if pending is None or pending.provider != provider_name or pending.expires_at < utcnow():
            return CallbackResult(None, "oauth_state_invalid")
        await session.delete(pending)  # single use, whatever happens next
    return_url, tenant_id = pending.return_url, pending.tenant_id
    if error:
        code_ = "oauth_consent_denied" if error == "access_denied" else "oauth_provider_error"
        log.info("sign-in refused", extra={"tenant_id": tenant_id, "error": error[:64]})
        return CallbackResult(return_url, code_)
    if not code:
        return CallbackResult(return_url, "oauth_provider_error")
    try:
        provider = provider_or_error(settings, provider_name)
    except RelayError as exc:
        return CallbackResult(return_url, exc.code)
    try:
        verifier = runtime.secrets.decrypt(
            pending.code_verifier_enc, context=f"oauth_state:{pending.state_hash}"
        )
    except SecretDecryptError:  # its key was removed from MAILRELAY_SECRET_KEYS meanwhile
        return CallbackResult(return_url, "oauth_state_invalid")
    try:
        token, account = await _redeem(runtime, provider, code=code, verifier=verifier)
    except SendError as exc:
        log.warning("sign-in failed", extra={"tenant_id": tenant_id, "code": exc.code})
        if isinstance(exc, AppConfigError):
            async with runtime.sessionmaker.begin() as session:
                await raise_alert(session, provider.name, exc.code, exc.detail)
        # At the callback, a refused grant is the code (reused, expired), not a stored token.
        code_ = "oauth_code_invalid" if exc.code == "oauth_token_revoked" else exc.code
        return CallbackResult(return_url, code_)

    # RFC 6749 §5.1: no `scope` in the answer means the scopes asked for were granted.
    granted = str(token.get("scope") or " ".join(provider.scopes)).split()
    if not has_scope(granted, provider.required_scope):
        return CallbackResult(return_url, "oauth_scope_missing")
    if not token.get("refresh_token"):
        return CallbackResult(return_url, "oauth_no_refresh_token")
    async with runtime.sessionmaker.begin() as session:
        await clear_alert(session, provider.name)
        try:
            mailbox = await get_mailbox(session, tenant_id, for_update=True)
        except RelayError as exc:
            return CallbackResult(return_url, exc.code)
        _store(runtime, mailbox, provider, token, account=account, scopes=granted)
    log.info("mailbox signed in", extra={"tenant_id": tenant_id, "provider": provider.name})
    return CallbackResult(return_url, None)


async def _redeem(
    runtime: Runtime, provider: OAuthProvider, *, code: str, verifier: str
) -> tuple[dict[str, Any], str]:
    try:
        async with _client(provider, runtime.settings) as client:
            token = dict(
                await client.fetch_token(provider.token_url, code=code, code_verifier=verifier)
            )
    except Exception as exc:
        raise classify_token_error(exc, provider=provider.name) from exc
    return token, await _account_email(runtime.http, provider, str(token["access_token"]))


async def _account_email(http: httpx.AsyncClient, provider: OAuthProvider, access: str) -> str:
    """The signed-in address: Google userinfo `email`; Graph `/me` `mail`, else the UPN."""
    try:
        response = await http.get(
            provider.identity_url, headers={"Authorization": f"Bearer {access}"}
        )
        response.raise_for_status()
        identity = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise classify_token_error(exc, provider=provider.name) from exc
    address = identity.get("email") or identity.get("mail") or identity.get("userPrincipalName")
    return str(address or "")


def _store(
    runtime: Runtime,
    mailbox: Mailbox,
    provider: OAuthProvider,
    token: dict[str, Any],
    *,
    account: str,
    scopes: list[str],
) -> None:
    now = utcnow()
    encrypt = runtime.secrets.encrypt
    clear_smtp(mailbox)
    mailbox.provider = provider.name
    mailbox.oauth_account_email = account
    mailbox.oauth_scopes = scopes
    mailbox.oauth_authorized_at = now
    mailbox.oauth_access_token_enc = encrypt(
        str(token["access_token"]), context=mailbox.secret_context(ACCESS_TOKEN)
    )
    mailbox.oauth_refresh_token_enc = encrypt(
        str(token["refresh_token"]), context=mailbox.secret_context(REFRESH_TOKEN)
    )
    mailbox.oauth_expires_at = expires_at(token, now)
    mailbox.refresh_lock_until = None
    mailbox.token_version += 1
    mark_reconfigured(mailbox)


async def revoke_google_token(runtime: Runtime, *, tenant_id: str) -> None:
    """Best effort before a delete: tell Google to drop the grant. Never raises."""
    async with runtime.sessionmaker() as session:
        mailbox = await session.scalar(select(Mailbox).where(Mailbox.tenant_id == tenant_id))
    if mailbox is None or mailbox.provider != Provider.GOOGLE:
        return
    if mailbox.oauth_refresh_token_enc is None:
        return
    try:
        token = runtime.secrets.decrypt(
            mailbox.oauth_refresh_token_enc, context=mailbox.secret_context(REFRESH_TOKEN)
        )
        response = await runtime.http.post(
            runtime.settings.google_revoke_url, data={"token": token}, timeout=5.0
        )
        log.info(
            "google token revoked",
            extra={"tenant_id": tenant_id, "status": response.status_code},
        )
    except Exception as exc:  # best effort: the tokens are erased with the row anyway
        log.warning(
            "google token revocation failed",
            extra={"tenant_id": tenant_id, "error": exc.__class__.__name__},
        )
