"""The Gmail driver: `users.messages.send` with the shared builder's bytes.

Small messages go as base64url JSON; large ones through the upload endpoint as `message/rfc822`.
Gmail takes the recipients from the headers (Bcc included, then stripped) and the From must be
the account or one of its send-as aliases, or Gmail rewrites it.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx

from app.senders.base import (
    CredentialsError,
    MessageRejectedError,
    SendError,
    SendResult,
    TokenSource,
    TransientError,
)
from app.senders.http import error_json, generic_status, post_with_token, retry_after
from app.senders.message import OutgoingMessage

GMAIL_MAX_BYTES = 36_700_160  # 35 MiB, Gmail's limit for messages.send
INLINE_MAX_BYTES = 5 * 1024 * 1024  # above this, the upload endpoint avoids a 4/3 larger JSON body
_RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "dailyLimitExceeded"}


class GmailSender:
    """Sends through the Gmail API of one signed-in account."""

    def __init__(self, *, api_root: str, tokens: TokenSource, http: httpx.AsyncClient) -> None:
        self.api_root = api_root.rstrip("/")
        self.tokens = tokens
        self.http = http

    async def send(
        self, message: OutgoingMessage, *, envelope_from: str | None = None
    ) -> SendResult:
        if message.envelope_to is not None:
            # Gmail takes recipients only from the headers; a partial resend is impossible.
            raise MessageRejectedError(
                "gmail_partial_resend", "Gmail cannot send to a subset of the recipients"
            )
        raw = message.as_bytes(include_bcc=True)
        if len(raw) > GMAIL_MAX_BYTES:
            raise MessageRejectedError(
                "message_too_large_for_gmail",
                f"{len(raw)} bytes exceed Gmail's limit of {GMAIL_MAX_BYTES} bytes",
            )
        request: dict[str, Any]
        if len(raw) <= INLINE_MAX_BYTES:
            request = {
                "url": f"{self.api_root}/gmail/v1/users/me/messages/send",
                "json": {"raw": base64.urlsafe_b64encode(raw).decode()},
            }
        else:
            request = {
                "url": f"{self.api_root}/upload/gmail/v1/users/me/messages/send",
                "params": {"uploadType": "media"},
                "content": raw,
                "headers": {"Content-Type": "message/rfc822"},
            }
        url = request.pop("url")
        response = await post_with_token(
            self.http, self.tokens, str(url), provider="gmail", classify=_classify, **request
        )
        body = response.json() if response.content else {}
        return SendResult(accepted=tuple(message.recipients), provider_message_id=body.get("id"))

    async def aclose(self) -> None:
        return None  # the HTTP client is shared and closed by its owner


def _classify(response: httpx.Response) -> SendError:
    error = error_json(response)
    reasons = {item.get("reason") for item in error.get("errors", []) if isinstance(item, dict)}
    message = str(error.get("message", ""))[:300]
    status = response.status_code
    if status == 403 and reasons & _RATE_REASONS:
        return TransientError(
            "gmail_throttled",
            f"Gmail: {message}",
            reply_code=403,
            retry_after=retry_after(response),
        )
    if status == 403:
        return CredentialsError(
            "oauth_scope_missing",
            f"Gmail refused: {message or 'insufficient permissions'}; sign in again and allow "
            "sending mail",
            reply_code=403,
        )
    if status == 400:
        return MessageRejectedError("gmail_invalid_argument", f"Gmail: {message}", reply_code=400)
    return generic_status(response, provider="gmail", reason=message)
