"""The driver Protocol, its result, and the failure classes every driver maps its errors to.

SendError                  one send failed; `code` is stable, `detail` is for people
  CredentialsError         the mailbox settings no longer work: deactivate, re-route, notify
  AppConfigError           the operator's app registration is broken: alert, never deactivate
  TransientError           retry with backoff; `connection_failure` ones can escalate
  MessageRejectedError     this message can never be sent; the mailbox is fine
  UnknownOutcomeError      the peer may have accepted it; retry with the same Message-ID
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from app.senders.message import OutgoingMessage


class FailureClass(enum.StrEnum):
    CREDENTIALS = "credentials"
    APP_CONFIG = "app_configuration"
    TRANSIENT = "transient"
    MESSAGE = "message"
    UNKNOWN_OUTCOME = "unknown_outcome"


class SendError(Exception):
    """A send that failed, classified; `reply_code` is the SMTP or HTTP status when known."""

    failure: ClassVar[FailureClass]

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        reply_code: int | None = None,
        retry_after: float | None = None,
        connection_failure: bool = False,
    ) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.reply_code = reply_code
        self.retry_after = retry_after
        self.connection_failure = connection_failure


class CredentialsError(SendError):
    """The mailbox's credentials or settings were refused."""

    failure = FailureClass.CREDENTIALS


class AppConfigError(SendError):
    """The operator's OAuth app is misconfigured; no tenant is at fault."""

    failure = FailureClass.APP_CONFIG


class TransientError(SendError):
    """Worth retrying later; a `connection_failure` that lasts counts as credentials."""

    failure = FailureClass.TRANSIENT


class MessageRejectedError(SendError):
    """This message is refused for good (recipients, size, content)."""

    failure = FailureClass.MESSAGE


class UnknownOutcomeError(SendError):
    """The connection was lost after the message was handed over; it may have been sent."""

    failure = FailureClass.UNKNOWN_OUTCOME


@dataclass(frozen=True)
class SendResult:
    """A send that was accepted, possibly with some recipients refused (address → reply)."""

    accepted: tuple[str, ...]
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    provider_message_id: str | None = None


class Sender(Protocol):
    """A connected way to send mail: SMTP, Gmail, Microsoft Graph or the default relay."""

    async def send(
        self, message: OutgoingMessage, *, envelope_from: str | None = None
    ) -> SendResult:
        """Send `message`, or raise a `SendError` subclass."""
        ...

    async def aclose(self) -> None:
        """Release connections; the sender may be used again afterwards."""
        ...


class TokenSource(Protocol):
    """Where an HTTP driver gets its OAuth access token."""

    async def access_token(self, *, stale: str | None = None) -> str:
        """A valid token; with `stale` (one the API just refused), a fresher one than that."""
        ...
