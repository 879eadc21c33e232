"""Token-endpoint failures, mapped to the failure classes of DESIGN.md."""

from __future__ import annotations

import httpx
from authlib.integrations.base_client.errors import OAuthError

from app.senders.base import AppConfigError, CredentialsError, SendError, TransientError

# The user or an admin withdrew the grant (or it lapsed): reconnect the mailbox.
_RECONNECT = {"invalid_grant", "interaction_required", "consent_required", "login_required"}


def classify_token_error(exc: Exception, *, provider: str) -> SendError:
    if isinstance(exc, OAuthError):
        error = exc.error or ""
        description = (exc.description or "")[:300]
        if error in _RECONNECT:
            return CredentialsError(
                "oauth_token_revoked",
                f"{provider} refused the stored grant ({error}): sign in again. {description}",
            )
        if error in ("invalid_client", "unauthorized_client"):
            if "AADSTS7000222" in description:
                return AppConfigError(
                    "oauth_client_secret_expired",
                    f"the {provider} client secret has expired: {description}",
                )
            return AppConfigError(
                "oauth_invalid_client",
                f"{provider} refused the relay's client credentials ({error}): {description}",
            )
        return TransientError("oauth_unavailable", f"{provider} token endpoint: {error}")
    if isinstance(exc, httpx.HTTPStatusError):
        return TransientError(
            "oauth_unavailable",
            f"{provider} token endpoint answered {exc.response.status_code}",
            reply_code=exc.response.status_code,
        )
    if isinstance(exc, httpx.TransportError):
        return TransientError(
            "oauth_unreachable",
            f"{provider} token endpoint unreachable ({exc.__class__.__name__})",
            connection_failure=True,
        )
    return TransientError("oauth_error", f"{provider}: unexpected {exc.__class__.__name__}")
