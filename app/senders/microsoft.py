"""The Microsoft Graph driver: `POST /me/sendMail` with a JSON message; 202 means accepted.

Graph's inline file attachments are limited to about 3 MB per request; larger ones would need an
upload session and the Mail.ReadWrite scope, so such a message fails with a clear code instead.
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
)
from app.senders.http import error_json, generic_status, post_with_token
from app.senders.message import MailAddress, OutgoingMessage

GRAPH_INLINE_ATTACHMENTS_MAX = 3 * 1024 * 1024


class GraphSender:
    """Sends as the signed-in Microsoft 365 / Outlook.com account."""

    def __init__(self, *, graph_url: str, tokens: TokenSource, http: httpx.AsyncClient) -> None:
        self.graph_url = graph_url.rstrip("/")
        self.tokens = tokens
        self.http = http

    async def send(
        self, message: OutgoingMessage, *, envelope_from: str | None = None
    ) -> SendResult:
        if message.envelope_to is not None:
            raise MessageRejectedError(
                "graph_partial_resend", "Graph cannot send to a subset of the recipients"
            )
        attached = sum(len(a.content) for a in message.attachments)
        if attached > GRAPH_INLINE_ATTACHMENTS_MAX:
            raise MessageRejectedError(
                "attachments_too_large_for_graph",
                f"{attached} bytes of attachments exceed Graph's inline limit of "
                f"{GRAPH_INLINE_ATTACHMENTS_MAX} bytes",
            )
        await post_with_token(
            self.http,
            self.tokens,
            f"{self.graph_url}/me/sendMail",
            provider="graph",
            classify=_classify,
            json={"message": graph_message(message), "saveToSentItems": False},
        )
        return SendResult(accepted=tuple(message.recipients))

    async def aclose(self) -> None:
        return None


def _recipients(addresses: tuple[MailAddress, ...]) -> list[dict[str, Any]]:
    return [
        {"emailAddress": {"address": a.email, **({"name": a.name} if a.name else {})}}
        for a in addresses
    ]


def graph_message(message: OutgoingMessage) -> dict[str, Any]:
    """The Graph `message` resource for `message`, our Message-ID included."""
    if message.html is not None:
        body = {"contentType": "HTML", "content": message.html}
    else:
        body = {"contentType": "Text", "content": message.text or ""}
    resource: dict[str, Any] = {
        "subject": message.subject,
        "body": body,
        "from": _recipients((message.sender,))[0],
        "toRecipients": _recipients(message.to),
        "ccRecipients": _recipients(message.cc),
        "bccRecipients": _recipients(message.bcc),
        "internetMessageId": message.message_id,
    }
    if message.reply_to is not None:
        resource["replyTo"] = _recipients((message.reply_to,))
    if message.headers:
        resource["internetMessageHeaders"] = [
            {"name": name, "value": value} for name, value in message.headers
        ]
    if message.attachments:
        resource["attachments"] = [
            {
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": a.filename,
                "contentType": a.content_type,
                "contentBytes": base64.b64encode(a.content).decode(),
            }
            for a in message.attachments
        ]
    return resource


def _classify(response: httpx.Response) -> SendError:
    error = error_json(response)
    code = str(error.get("code", ""))
    text = str(error.get("message", ""))[:300]
    status = response.status_code
    if status == 403:
        return CredentialsError(
            "oauth_scope_missing" if code == "ErrorAccessDenied" else "graph_forbidden",
            f"Graph refused ({code}): {text}; sign in again and allow sending mail",
            reply_code=403,
        )
    if status == 400:
        return MessageRejectedError(
            "graph_invalid_recipients" if code == "ErrorInvalidRecipients" else "graph_rejected",
            f"Graph: {code}: {text}",
            reply_code=400,
        )
    return generic_status(response, provider="graph", reason=f"{code} {text}")
