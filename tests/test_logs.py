"""Log lines: structured fields appended, secrets of the OAuth callback kept out."""

from __future__ import annotations

import logging

from app.logs import KeyValueFormatter, RedactOAuthCallback


def record(msg: str, args: tuple[object, ...], **extra: object) -> logging.LogRecord:
    item = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, msg, args, None)
    item.__dict__.update(extra)
    return item


def test_extra_fields_follow_the_message() -> None:
    line = KeyValueFormatter("%(message)s").format(
        record("mailbox created", (), tenant_id="acme", color_message="\x1b[1m")
    )
    assert line == "mailbox created tenant_id='acme'"


def test_callback_code_and_state_are_not_logged() -> None:
    access = '%s - "%s %s HTTP/%s" %d'
    path = "/v1/oauth/google/callback?code=4/0secret&state=abc"
    item = record(access, ("127.0.0.1:1", "GET", path, "1.1", 303))
    assert RedactOAuthCallback().filter(item)
    assert "secret" not in item.getMessage() and "abc" not in item.getMessage()
    other = record(access, ("127.0.0.1:1", "GET", "/v1/tenants/acme/messages?limit=5", "1.1", 200))
    RedactOAuthCallback().filter(other)
    assert "limit=5" in other.getMessage()
