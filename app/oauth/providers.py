"""What differs between Google and Microsoft: endpoints, scopes, extra parameters, identity."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.mailboxes.models import Provider
from app.settings import Settings

GMAIL_SEND_SCOPE = "https://www.googleapis.com/auth/gmail.send"
GRAPH_SEND_SCOPE = "Mail.Send"


@dataclass(frozen=True)
class OAuthProvider:
    """One identity provider as configured by the operator."""

    name: Provider
    client_id: str
    client_secret: str
    authorize_url: str
    token_url: str
    scopes: tuple[str, ...]
    required_scope: str
    identity_url: str
    revoke_url: str | None = None
    authorize_params: dict[str, str] = field(default_factory=dict)
    rotates_refresh_tokens: bool = False


def configured_providers(settings: Settings) -> dict[Provider, OAuthProvider]:
    """The providers whose client id is set; the others are off."""
    providers: dict[Provider, OAuthProvider] = {}
    if settings.google_client_id:
        providers[Provider.GOOGLE] = OAuthProvider(
            name=Provider.GOOGLE,
            client_id=settings.google_client_id,
            client_secret=_secret(settings.google_client_secret),
            authorize_url=settings.google_authorize_url,
            token_url=settings.google_token_url,
            scopes=("openid", "email", GMAIL_SEND_SCOPE),
            required_scope=GMAIL_SEND_SCOPE,
            identity_url=settings.google_userinfo_url,
            revoke_url=settings.google_revoke_url,
            # Without both, Google issues no refresh token on a re-connect.
            authorize_params={"access_type": "offline", "prompt": "consent"},
        )
    if settings.microsoft_client_id:
        authority = settings.microsoft_authority.rstrip("/")
        providers[Provider.MICROSOFT] = OAuthProvider(
            name=Provider.MICROSOFT,
            client_id=settings.microsoft_client_id,
            client_secret=_secret(settings.microsoft_client_secret),
            authorize_url=f"{authority}/oauth2/v2.0/authorize",
            token_url=f"{authority}/oauth2/v2.0/token",
            scopes=("openid", "email", "offline_access", "User.Read", GRAPH_SEND_SCOPE),
            required_scope=GRAPH_SEND_SCOPE,
            identity_url=f"{settings.microsoft_graph_url.rstrip('/')}/me",
            rotates_refresh_tokens=True,
        )
    return providers


def _secret(value: object) -> str:
    get = getattr(value, "get_secret_value", None)
    return str(get()) if get is not None else ""


def has_scope(granted: list[str], required: str) -> bool:
    """Microsoft may answer `Mail.Send` as `https://graph.microsoft.com/Mail.Send`."""
    lowered = {scope.lower() for scope in granted}
    return required.lower() in lowered or any(s.endswith("/" + required.lower()) for s in lowered)
