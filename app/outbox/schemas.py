"""Request and response bodies of the messages API."""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.outbox.models import MessageStatus, Outcome, Via
from app.senders.addresses import EmailAddress, HeaderText

MAX_RECIPIENTS = 100
_CUSTOM_HEADER = re.compile(r"X-[A-Za-z0-9][A-Za-z0-9-]{0,76}", re.IGNORECASE)
_CONTENT_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: Annotated[HeaderText, Field(min_length=1, max_length=255)]
    content_type: Annotated[str, Field(max_length=255)] = "application/octet-stream"
    content_base64: str

    @field_validator("content_type")
    @classmethod
    def _mime_type(cls, value: str) -> str:
        value = value.strip().lower()
        if not _CONTENT_TYPE.fullmatch(value):
            raise ValueError("must be a MIME type such as application/pdf")
        return value

    @field_validator("content_base64")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be standard base64") from None
        return value

    @property
    def size(self) -> int:
        return len(self.content_base64) * 3 // 4


class MessageCreate(BaseModel):
    """A message for the outbox; its sender is chosen when it is sent (see DESIGN.md)."""

    model_config = ConfigDict(extra="forbid")

    to: Annotated[list[EmailAddress], Field(min_length=1)]
    cc: list[EmailAddress] = Field(default_factory=list)
    bcc: list[EmailAddress] = Field(default_factory=list)
    subject: Annotated[HeaderText, Field(max_length=998)]
    text: str | None = None
    html: str | None = None
    reply_to: EmailAddress | None = None
    attachments: list[AttachmentIn] = Field(default_factory=list)
    headers: dict[str, HeaderText] = Field(
        default_factory=dict, description="Custom headers; names must start with X-."
    )
    metadata: dict[str, Any] | None = Field(
        default=None, description="Kept with the message and returned as is."
    )

    @field_validator("headers")
    @classmethod
    def _custom_headers_only(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _CUSTOM_HEADER.fullmatch(name):
                raise ValueError(f"header {name!r} is not allowed: only X-* headers")
        return value

    @model_validator(mode="after")
    def _body_and_recipients(self) -> MessageCreate:
        if self.text is None and self.html is None:
            raise ValueError("give text, html or both")
        if len(self.to) + len(self.cc) + len(self.bcc) > MAX_RECIPIENTS:
            raise ValueError(f"at most {MAX_RECIPIENTS} recipients in to, cc and bcc together")
        for body in (self.text, self.html):
            if body is not None and "\x00" in body:
                raise ValueError("the body may not contain NUL characters")
        return self

    def estimated_size(self) -> int:
        """Bytes of the built message, near enough to enforce MAILRELAY_MAX_MESSAGE_BYTES."""
        text = len((self.text or "").encode()) + len((self.html or "").encode())
        attachments = sum(len(a.content_base64) for a in self.attachments)
        return text + attachments + 2048


class AttemptRead(BaseModel):
    at: datetime
    via: Via
    outcome: Outcome
    code: str | None
    detail: str | None


class MessageRead(BaseModel):
    """A message and what happened to it; `from` and `reply_to` are those it left with."""

    model_config = ConfigDict(populate_by_name=True)

    id: uuid.UUID
    status: MessageStatus
    via: Via | None
    from_: str | None = Field(alias="from")
    reply_to: str | None
    to: list[str]
    subject: str
    message_id_header: str
    attempts: list[AttemptRead]
    metadata: dict[str, Any] | None
    created_at: datetime
    sent_at: datetime | None


class MessagePage(BaseModel):
    items: list[MessageRead]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page.")
