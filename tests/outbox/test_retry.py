"""The retry policy and the decisions, as plain values."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from app.outbox.decisions import AttemptState, Limits, decide
from app.outbox.models import MessageStatus, Outcome, Via
from app.outbox.retry import RetryPolicy
from app.senders.base import (
    AppConfigError,
    CredentialsError,
    MessageRejectedError,
    SendResult,
    TransientError,
    UnknownOutcomeError,
)

POLICY = RetryPolicy(base=timedelta(seconds=5), cap=timedelta(minutes=10))
LIMITS = Limits(
    retry_window=timedelta(minutes=15), broken_after=timedelta(hours=6), max_age=timedelta(days=3)
)
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def state(via: Via = Via.MAILBOX, **changes: object) -> AttemptState:
    fields: dict[str, object] = {
        "via": via,
        "failures": 0,
        "created_at": NOW - timedelta(minutes=1),
        "message_failing_since": None,
        "mailbox_failing_since": None,
    }
    fields.update(changes)
    return AttemptState(**fields)  # type: ignore[arg-type]


def test_backoff_grows_is_jittered_and_capped() -> None:
    rng = random.Random(7)
    for failures, ceiling in [(1, 5), (2, 10), (3, 20), (8, 600), (40, 600)]:
        delays = [POLICY.delay(failures, rng=rng).total_seconds() for _ in range(200)]
        assert min(delays) >= ceiling / 2
        assert max(delays) <= ceiling
        assert len(set(delays)) > 100, "jittered"


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    assert POLICY.delay(1, retry_after=120).total_seconds() == 120
    assert POLICY.delay(1, retry_after=86_400).total_seconds() == 600
    assert POLICY.delay(1, retry_after=0.1).total_seconds() >= 2.5


def test_success_and_partial_refusals() -> None:
    sent = decide(
        SendResult(accepted=("a@x.test",)), state(), now=NOW, policy=POLICY, limits=LIMITS
    )
    assert (sent.outcome, sent.status, sent.mailbox_failing_since) == (
        Outcome.SENT,
        MessageStatus.SENT,
        None,
    )
    partial = SendResult(
        accepted=("a@x.test",),
        refused={"b@x.test": (550, "no such user"), "c@x.test": (452, "full")},
    )
    decision = decide(partial, state(), now=NOW, policy=POLICY, limits=LIMITS)
    assert decision.status is MessageStatus.QUEUED
    assert decision.pending_recipients == ["c@x.test"]
    assert "b@x.test" in (decision.detail or "")


@pytest.mark.parametrize(
    ("error", "outcome", "status", "reroute", "deactivate"),
    [
        (
            CredentialsError("smtp_auth_failed", "535"),
            Outcome.REROUTED,
            MessageStatus.QUEUED,
            True,
            True,
        ),
        (
            AppConfigError("oauth_invalid_client", "x"),
            Outcome.REROUTED,
            MessageStatus.QUEUED,
            True,
            False,
        ),
        (TransientError("smtp_timeout", "x"), Outcome.DEFERRED, MessageStatus.QUEUED, False, False),
        (
            MessageRejectedError("smtp_rejected", "550"),
            Outcome.FAILED,
            MessageStatus.FAILED,
            False,
            False,
        ),
        (
            UnknownOutcomeError("smtp_timeout", "x"),
            Outcome.UNKNOWN,
            MessageStatus.QUEUED,
            False,
            False,
        ),
    ],
)
def test_failure_classes_through_the_mailbox(
    error: Exception,
    outcome: Outcome,
    status: MessageStatus,
    reroute: bool,
    deactivate: bool,
) -> None:
    decision = decide(error, state(), now=NOW, policy=POLICY, limits=LIMITS)  # type: ignore[arg-type]
    assert (decision.outcome, decision.status, decision.reroute, decision.deactivate) == (
        outcome,
        status,
        reroute,
        deactivate,
    )


def test_default_sender_failures_are_retried_not_rerouted() -> None:
    for error in (CredentialsError("smtp_auth_failed", "x"), TransientError("smtp_timeout", "x")):
        decision = decide(error, state(Via.DEFAULT), now=NOW, policy=POLICY, limits=LIMITS)
        assert decision.outcome is Outcome.DEFERRED
        assert not decision.reroute and not decision.deactivate


def test_retry_window_reroutes_and_broken_after_deactivates() -> None:
    transient = TransientError("smtp_connect_failed", "refused", connection_failure=True)
    first = decide(transient, state(), now=NOW, policy=POLICY, limits=LIMITS)
    assert first.message_failing_since == NOW and first.mailbox_failing_since == NOW

    later = state(message_failing_since=NOW - timedelta(minutes=16))
    assert decide(transient, later, now=NOW, policy=POLICY, limits=LIMITS).reroute

    broken = state(mailbox_failing_since=NOW - timedelta(hours=6, seconds=1))
    decision = decide(transient, broken, now=NOW, policy=POLICY, limits=LIMITS)
    assert decision.reroute and decision.deactivate

    # A 4xx reply is no connection failure: it never counts towards "broken".
    reply = TransientError("smtp_rejected", "451")
    decision = decide(reply, broken, now=NOW, policy=POLICY, limits=LIMITS)
    assert not decision.deactivate


def test_messages_expire_after_max_age() -> None:
    old = state(Via.DEFAULT, created_at=NOW - timedelta(days=3, seconds=1))
    decision = decide(
        TransientError("smtp_timeout", "x"), old, now=NOW, policy=POLICY, limits=LIMITS
    )
    assert (decision.status, decision.code) == (MessageStatus.FAILED, "expired")


def test_reroute_after_the_window_keeps_the_mailbox_breakdown_clock() -> None:
    transient = TransientError("smtp_connect_failed", "refused", connection_failure=True)
    since = NOW - timedelta(minutes=20)
    later = state(message_failing_since=since, mailbox_failing_since=since)
    decision = decide(transient, later, now=NOW, policy=POLICY, limits=LIMITS)
    assert decision.reroute and decision.mailbox_failing_since == since
