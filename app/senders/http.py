"""What the HTTP drivers (Gmail, Microsoft Graph) share: sending with one token retry, and errors.

A 401 gets one fresh token and one more try; a 401 after a fresh token is a credentials failure.
A transport error before the request was written is transient; once the body was written, the
outcome is unknown (the provider may have sent the mail).
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from app.senders.base import (
    CredentialsError,
    MessageRejectedError,
    SendError,
    TokenSource,
    TransientError,
    UnknownOutcomeError,
)

Classifier = Callable[[httpx.Response], SendError]


async def post_with_token(
    http: httpx.AsyncClient,
    tokens: TokenSource,
    url: str,
    *,
    provider: str,
    classify: Classifier,
    **request: Any,
) -> httpx.Response:
    """POST with a bearer token; one refresh and retry on 401; errors classified."""
    token = await tokens.access_token()
    for attempt in (1, 2):
        headers = {**request.pop("headers", {}), "Authorization": f"Bearer {token}"}
        try:
            response = await http.post(url, headers=headers, **request)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TransientError(
                f"{provider}_unreachable",
                f"{provider} API unreachable ({exc.__class__.__name__})",
                connection_failure=True,
            ) from exc
        except httpx.TransportError as exc:
            raise UnknownOutcomeError(
                f"{provider}_connection_lost",
                f"the connection to the {provider} API broke after the request "
                f"({exc.__class__.__name__}); it may have been sent",
            ) from exc
        request["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
        if response.status_code == 401 and attempt == 1:
            token = await tokens.access_token(stale=token)
            continue
        if response.is_success:
            return response
        raise classify(response)
    raise AssertionError("unreachable")  # pragma: no cover


def retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` as seconds, from either of its two forms."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def generic_status(response: httpx.Response, *, provider: str, reason: str) -> SendError:
    """The status-code part of the mapping both providers follow."""
    status = response.status_code
    detail = f"{provider} answered {status} {reason}".strip()
    if status == 401:
        return CredentialsError(f"{provider}_unauthorized", f"{detail} even with a fresh token")
    if status == 429 or status >= 500:
        return TransientError(
            f"{provider}_unavailable" if status >= 500 else f"{provider}_throttled",
            detail,
            reply_code=status,
            retry_after=retry_after(response),
        )
    return MessageRejectedError(f"{provider}_rejected", detail, reply_code=status)


def error_json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}
