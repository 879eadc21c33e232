"""Request and response bodies of the mailbox API."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from app.mailboxes.models import Mailbox, MailboxStatus, Provider
from app.senders.addresses import EmailAddress, HeaderText, reject_control_characters
from app.senders.smtp import Security

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_IP_LITERAL = re.compile(r"^[0-9.]+$|^\[?[0-9a-f:.]+\]?$")

DisplayName = Annotated[
    HeaderText, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)
]
NotifyEmails = Annotated[list[EmailAddress], Field(max_length=20)]


class _Input(BaseModel):
    # No blanket whitespace stripping: a password may begin or end with a space.
    model_config = ConfigDict(extra="forbid")


class MailboxCreate(_Input):
    """Create a tenant's mailbox: its display name and official address."""

    display_name: DisplayName
    email: EmailAddress
    notify_emails: NotifyEmails | None = Field(
        default=None, description="Who is told when the mailbox breaks; default: the mailbox."
    )


class MailboxUpdate(_Input):
    """Change the display name or the notification addresses; omitted fields stay."""

    display_name: DisplayName | None = None
    notify_emails: NotifyEmails | None = Field(
        default=None, description="An empty list means the mailbox address itself."
    )


class SmtpSettingsIn(_Input):
    """SMTP connection settings; give `security`, or the legacy `use_ssl` switch."""

    username: Annotated[HeaderText, Field(min_length=1, max_length=320)] | None = Field(
        default=None, description="Defaults to the mailbox address."
    )
    password: Annotated[SecretStr, Field(min_length=1, max_length=1024)]
    host: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=253)]
    port: Annotated[int, Field(ge=1, le=65535)]
    security: Security | None = Field(
        default=None,
        description="tls: implicit TLS (465); starttls: STARTTLS required (587); none: plaintext,"
        " only for hosts in MAILRELAY_SMTP_ALLOWED_NETWORKS.",
    )
    use_ssl: bool | None = Field(
        default=None,
        description="Legacy switch: true on 465 means tls, true on any other port starttls,"
        " false means none.",
    )

    @field_validator("password")
    @classmethod
    def _password_is_one_line(cls, value: SecretStr) -> SecretStr:
        reject_control_characters(value.get_secret_value())
        return value

    @field_validator("host")
    @classmethod
    def _host_is_a_name_or_address(cls, value: str) -> str:
        host = value.lower().rstrip(".")
        if not (_HOSTNAME.fullmatch(host) or _IP_LITERAL.fullmatch(host)):
            raise ValueError("must be a host name or an IP address")
        return host.strip("[]")

    @model_validator(mode="after")
    def _one_security_switch(self) -> SmtpSettingsIn:
        if (self.security is None) == (self.use_ssl is None):
            raise ValueError("give exactly one of 'security' and 'use_ssl'")
        return self

    @property
    def effective_security(self) -> Security:
        if self.security is not None:
            return self.security
        if not self.use_ssl:
            return Security.NONE
        return Security.TLS if self.port == 465 else Security.STARTTLS


class TestMailRequest(_Input):
    """Send a real test mail through the mailbox's connection."""

    to: EmailAddress | None = Field(default=None, description="Default: the mailbox address.")


class SmtpSettingsRead(BaseModel):
    username: str
    host: str
    port: int
    security: Security


class OAuthRead(BaseModel):
    account_email: str
    scopes: list[str]
    authorized_at: datetime
    warning: str | None = Field(
        default=None, description="Set when the signed-in account is not the mailbox address."
    )


class LastError(BaseModel):
    code: str
    detail: str
    at: datetime


def _oauth(mailbox: Mailbox) -> OAuthRead | None:
    if mailbox.provider not in (Provider.GOOGLE, Provider.MICROSOFT):
        return None
    account = mailbox.oauth_account_email or ""
    warning = None
    if account.lower() != mailbox.email.lower():
        warning = (
            f"Signed in as {account}, not {mailbox.email}: mail will leave from {account} "
            f"unless {mailbox.email} is an alias the account may send as."
        )
    return OAuthRead(
        account_email=account,
        scopes=mailbox.oauth_scopes or [],
        authorized_at=mailbox.oauth_authorized_at or mailbox.updated_at,
        warning=warning,
    )


class MailboxRead(BaseModel):
    """A tenant's mailbox as the settings screen shows it; never a password or a token."""

    tenant_id: str
    display_name: str
    email: str
    status: MailboxStatus
    provider: Provider | None
    smtp: SmtpSettingsRead | None
    oauth: OAuthRead | None
    notify_emails: list[str]
    last_error: LastError | None
    activated_at: datetime | None
    deactivated_at: datetime | None
    created_at: datetime
    updated_at: datetime
    available_providers: list[Provider]

    @classmethod
    def build(cls, mailbox: Mailbox, *, available_providers: list[Provider]) -> MailboxRead:
        smtp = None
        if mailbox.provider == Provider.SMTP:
            smtp = SmtpSettingsRead(
                username=mailbox.smtp_username or mailbox.email,
                host=mailbox.smtp_host or "",
                port=mailbox.smtp_port or 0,
                security=Security(mailbox.smtp_security or Security.STARTTLS),
            )
        last_error = None
        if mailbox.last_error_code is not None:
            last_error = LastError(
                code=mailbox.last_error_code,
                detail=mailbox.last_error_detail or "",
                at=mailbox.last_error_at or mailbox.updated_at,
            )
        return cls(
            tenant_id=mailbox.tenant_id,
            display_name=mailbox.display_name,
            email=mailbox.email,
            status=mailbox.status,
            provider=mailbox.provider,
            smtp=smtp,
            oauth=_oauth(mailbox),
            notify_emails=mailbox.notify_emails or [mailbox.email],
            last_error=last_error,
            activated_at=mailbox.activated_at,
            deactivated_at=mailbox.deactivated_at,
            created_at=mailbox.created_at,
            updated_at=mailbox.updated_at,
            available_providers=available_providers,
        )
