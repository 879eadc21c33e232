"""The message builder: headers, encodings, alternatives and attachments as a receiver sees them."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest

from app.senders.message import Attachment, MailAddress, OutgoingMessage, make_message_id

DATE = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)


def build(**overrides: object) -> OutgoingMessage:
    fields: dict[str, object] = {
        "sender": MailAddress("hr@acme.test", "Acme HR"),
        "to": (MailAddress("juergen@globex.test", "Jürgen Müller"),),
        "subject": "Gehaltsabrechnung für Dezember ✓",
        "message_id": "<abc123@acme.test>",
        "date": DATE,
        "text": "Hallo Jürgen,\nanbei die Abrechnung.\n",
    }
    fields.update(overrides)
    return OutgoingMessage(**fields)  # type: ignore[arg-type]


def parse(raw: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def test_headers_and_utf8_round_trip() -> None:
    message = build(
        cc=(MailAddress("cc@globex.test"),),
        bcc=(MailAddress("audit@acme.test"),),
        reply_to=MailAddress("hr@acme.test", "Acme HR"),
        headers=(("X-Hrms-Event", "payslip"),),
    )
    raw = message.as_bytes()
    assert raw.isascii(), "7-bit clean on the wire"
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    parsed = parse(raw)
    assert parsed["From"] == "Acme HR <hr@acme.test>"
    assert parsed["To"] == "Jürgen Müller <juergen@globex.test>"
    assert parsed["Cc"] == "cc@globex.test"
    assert parsed["Bcc"] is None
    assert parsed["Reply-To"] == "Acme HR <hr@acme.test>"
    assert parsed["Subject"] == "Gehaltsabrechnung für Dezember ✓"
    assert parsed["Date"] == "Thu, 03 Dec 2026 09:30:00 +0000"
    assert parsed["Message-ID"] == "<abc123@acme.test>"
    assert parsed["X-Hrms-Event"] == "payslip"
    assert parsed.get_content() == "Hallo Jürgen,\nanbei die Abrechnung.\n"
    assert message.recipients == ["juergen@globex.test", "cc@globex.test", "audit@acme.test"]


def test_bcc_only_when_asked() -> None:
    message = build(bcc=(MailAddress("audit@acme.test"),))
    assert parse(message.as_bytes(include_bcc=True))["Bcc"] == "audit@acme.test"


def test_text_and_html_become_an_alternative_with_attachments() -> None:
    pdf = b"%PDF-1.7\x00\xff binary"
    message = build(
        html="<p>Hallo <b>Jürgen</b></p>",
        attachments=(Attachment("Abrechnung-Dezember.pdf", "application/pdf", pdf),),
    )
    parsed = parse(message.as_bytes())
    assert parsed.get_content_type() == "multipart/mixed"
    body = parsed.get_body(preferencelist=("html",))
    assert body is not None and body.get_content() == "<p>Hallo <b>Jürgen</b></p>\n"
    plain = parsed.get_body(preferencelist=("plain",))
    assert plain is not None and "anbei" in plain.get_content()
    [attachment] = list(parsed.iter_attachments())
    assert attachment.get_filename() == "Abrechnung-Dezember.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == pdf


def test_html_only() -> None:
    parsed = parse(build(text=None, html="<p>Hi</p>").as_bytes())
    assert parsed.get_content_type() == "text/html"


@pytest.mark.parametrize(
    "overrides",
    [
        {"subject": "Hi\r\nBcc: victim@evil.test"},
        {"sender": MailAddress("hr@acme.test", "Acme\nBcc: victim@evil.test")},
        {"headers": (("X-Tag", "a\r\nBcc: victim@evil.test"),)},
    ],
)
def test_header_injection_is_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"linefeed|carriage|CR or LF"):
        build(**overrides).as_bytes()


def test_non_ascii_local_part_needs_smtputf8() -> None:
    assert not build().needs_smtputf8
    message = build(to=(MailAddress("jürgen@globex.test", "Jürgen"),))
    assert message.needs_smtputf8
    assert parse(message.as_bytes())["To"] == "Jürgen <jürgen@globex.test>"


def test_message_ids_are_unique_and_bracketed() -> None:
    ids = {make_message_id("acme.test") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("<") and i.endswith("@acme.test>") for i in ids)
