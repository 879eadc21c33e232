"""What an attempt's result means for the message and its mailbox. Pure: values in, a value out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from app.outbox.models import MessageStatus, Outcome, Via
from app.outbox.retry import RetryPolicy
from app.senders.base import (
    AppConfigError,
    CredentialsError,
    MessageRejectedError,
    SendError,
    SendResult,
    TransientError,
    UnknownOutcomeError,
)


@dataclass(frozen=True)
class Limits:
    """The time limits of DESIGN.md that decisions depend on."""

    retry_window: timedelta
    broken_after: timedelta
    max_age: timedelta


@dataclass(frozen=True)
class AttemptState:
    """What a decision needs to know about the message and the mailbox at the attempt."""

    via: Via
    failures: int  # earlier failed attempts of this message
    created_at: datetime
    message_failing_since: datetime | None  # first transient failure through the mailbox
    mailbox_failing_since: datetime | None  # first connection failure of the mailbox


@dataclass(frozen=True)
class Decision:
    """The next state of the message, and what to do to the mailbox."""

    outcome: Outcome
    status: MessageStatus
    code: str | None = None
    detail: str | None = None
    retry_at: datetime | None = None
    reroute: bool = False  # send through the default sender from now on
    deactivate: bool = False
    pending_recipients: list[str] | None = None
    message_failing_since: datetime | None = None
    mailbox_failing_since: datetime | None = None  # None: clear it


def decide(
    result: SendResult | SendError,
    state: AttemptState,
    *,
    now: datetime,
    policy: RetryPolicy,
    limits: Limits,
) -> Decision:
    through_mailbox = state.via == Via.MAILBOX

    if isinstance(result, SendResult):
        refused = result.refused
        deferred = [r for r, (code, _) in refused.items() if code < 500]
        rejected = "; ".join(f"{r}: {c} {t}" for r, (c, t) in refused.items() if c >= 500)
        if deferred:
            return Decision(
                Outcome.DEFERRED,
                MessageStatus.QUEUED,
                code="recipients_deferred",
                detail=f"sent to {len(result.accepted)}; deferred: {', '.join(deferred)}"
                + (f"; refused: {rejected}" if rejected else ""),
                retry_at=now + policy.delay(state.failures + 1),
                pending_recipients=deferred,
                message_failing_since=state.message_failing_since,
            )
        return Decision(
            Outcome.SENT,
            MessageStatus.SENT,
            code="recipients_refused" if rejected else None,
            detail=f"refused: {rejected}" if rejected else None,
        )

    def retry(outcome: Outcome, **changes: object) -> Decision:
        if now - state.created_at >= limits.max_age:
            return Decision(
                Outcome.FAILED,
                MessageStatus.FAILED,
                code="expired",
                detail=f"undelivered after {limits.max_age}; last: {result.code}: {result.detail}",
            )
        delay = policy.delay(state.failures + 1, retry_after=result.retry_after)
        fields: dict[str, object] = {
            "code": result.code,
            "detail": result.detail,
            "retry_at": now + delay,
            "message_failing_since": state.message_failing_since,
            "mailbox_failing_since": state.mailbox_failing_since,
        }
        fields.update(changes)
        return Decision(outcome, MessageStatus.QUEUED, **fields)  # type: ignore[arg-type]

    def reroute(*, deactivate: bool, mailbox_failing_since: datetime | None = None) -> Decision:
        return Decision(
            Outcome.REROUTED,
            MessageStatus.QUEUED,
            code=result.code,
            detail=result.detail,
            retry_at=now,
            reroute=True,
            deactivate=deactivate,
            mailbox_failing_since=mailbox_failing_since,
        )

    if isinstance(result, MessageRejectedError):
        return Decision(
            Outcome.FAILED, MessageStatus.FAILED, code=result.code, detail=result.detail
        )
    if isinstance(result, UnknownOutcomeError):
        return retry(Outcome.UNKNOWN)
    if not through_mailbox:
        # The operator's relay: its failures never fail a message before it expires.
        return retry(Outcome.DEFERRED)
    if isinstance(result, CredentialsError):
        return reroute(deactivate=True)
    if isinstance(result, AppConfigError):
        return reroute(deactivate=False)
    assert isinstance(result, TransientError)  # noqa: S101 (the failure classes are closed)
    mailbox_failing = state.mailbox_failing_since
    if result.connection_failure:
        mailbox_failing = mailbox_failing or now
        if now - mailbox_failing >= limits.broken_after:
            return reroute(deactivate=True)
    message_failing = state.message_failing_since or now
    if now - message_failing >= limits.retry_window:
        # The message moves on; the mailbox's breakdown clock keeps running.
        return reroute(deactivate=False, mailbox_failing_since=mailbox_failing)
    return retry(
        Outcome.DEFERRED,
        message_failing_since=message_failing,
        mailbox_failing_since=mailbox_failing,
    )
