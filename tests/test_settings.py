"""Settings read from the environment."""

from __future__ import annotations

from datetime import timedelta

from app.settings import Settings


def test_durations_accept_seconds_and_iso_8601() -> None:
    settings = Settings(smtp_timeout="30", mailbox_retry_window="PT15M", retry_base="0.5")
    assert settings.smtp_timeout == timedelta(seconds=30)
    assert settings.mailbox_retry_window == timedelta(minutes=15)
    assert settings.retry_base == timedelta(milliseconds=500)
