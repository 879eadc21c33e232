"""`MAILRELAY_DEFAULT_SMTP_URL` parsing."""

from __future__ import annotations

import pytest

from app.senders.smtp import Security, SmtpConfig


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "smtp://user:p%40ss@relay.example.com:587?security=starttls",
            SmtpConfig("relay.example.com", 587, Security.STARTTLS, "user", "p@ss"),
        ),
        (
            "smtps://user:pw@relay.example.com",
            SmtpConfig("relay.example.com", 465, Security.TLS, "user", "pw"),
        ),
        ("smtp://relay.example.com", SmtpConfig("relay.example.com", 587, Security.STARTTLS)),
        ("smtp://127.0.0.1:2525?security=none", SmtpConfig("127.0.0.1", 2525, Security.NONE)),
        ("smtp://relay.example.com:25", SmtpConfig("relay.example.com", 25, Security.NONE)),
    ],
)
def test_from_url(url: str, expected: SmtpConfig) -> None:
    config = SmtpConfig.from_url(url)
    assert config == expected
    assert config.password is None or config.password not in repr(config)


@pytest.mark.parametrize("url", ["http://x", "smtp://", "smtp://h?security=ssl"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (ValueError is the contract)
        SmtpConfig.from_url(url)
