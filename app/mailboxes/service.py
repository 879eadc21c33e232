"""Mailbox life cycle: create, change, connect by SMTP, test, delete; the state rules of DESIGN.md.

Functions that take a session only flush; the caller owns the transaction. `send_test_mail` is the
exception: it must not hold a transaction while it talks to a mail server, so it takes the
runtime and opens its own short transactions around the network I/O.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.crypto import SecretDecryptError
from app.db.base import utcnow
from app.errors import ConflictError, InvalidInputError, NotFoundError, RelayError
from app.mailboxes.models import Mailbox, MailboxStatus, Provider
from app.mailboxes.schemas import MailboxCreate, MailboxUpdate, SmtpSettingsIn
from app.mailboxes.tenants import validate_tenant_id
from app.oauth.providers import configured_providers
from app.oauth.tokens import MailboxTokens
from app.runtime import Runtime
from app.senders.base import Sender, SendError, TransientError
from app.senders.message import MailAddress, OutgoingMessage, make_message_id
from app.senders.netpolicy import HostPolicyError
from app.senders.registry import DriverContext, HttpApiConfig, build_driver
from app.senders.smtp import Security, SmtpConfig
from app.webhooks.service import record_event

log = logging.getLogger(__name__)

SMTP_PASSWORD = "smtp_password"  # noqa: S105 (a field name, not a password)


async def get_mailbox(
    session: AsyncSession, tenant_id: str, *, for_update: bool = False
) -> Mailbox:
    query = select(Mailbox).where(Mailbox.tenant_id == tenant_id)
    if for_update:
        query = query.with_for_update()
    mailbox = await session.scalar(query)
    if mailbox is None:
        raise NotFoundError("mailbox_not_found", f"Tenant {tenant_id} has no mailbox.")
    return mailbox


async def create_mailbox(session: AsyncSession, *, tenant_id: str, data: MailboxCreate) -> Mailbox:
    validate_tenant_id(tenant_id)
    exists = ConflictError("mailbox_exists", f"Tenant {tenant_id} already has a mailbox.")
    if await session.scalar(select(Mailbox.id).where(Mailbox.tenant_id == tenant_id)):
        raise exists
    mailbox = Mailbox(
        tenant_id=tenant_id,
        display_name=data.display_name,
        email=data.email,
        notify_emails=data.notify_emails or [],
        status=MailboxStatus.NOT_CONFIGURED,
    )
    session.add(mailbox)
    try:
        await session.flush()
    except IntegrityError:  # a concurrent create won the race
        raise exists from None
    log.info("mailbox created", extra={"tenant_id": tenant_id})
    return mailbox


async def update_mailbox(session: AsyncSession, *, tenant_id: str, data: MailboxUpdate) -> Mailbox:
    mailbox = await get_mailbox(session, tenant_id)
    if data.display_name is not None:
        mailbox.display_name = data.display_name
    if data.notify_emails is not None:
        mailbox.notify_emails = data.notify_emails
    await session.flush()
    return mailbox


async def delete_mailbox(session: AsyncSession, *, tenant_id: str) -> None:
    """Remove the mailbox and, with its row, every secret it held."""
    mailbox = await get_mailbox(session, tenant_id)
    await session.delete(mailbox)
    await session.flush()
    log.info("mailbox deleted", extra={"tenant_id": tenant_id})


async def save_smtp_settings(
    session: AsyncSession, runtime: Runtime, *, tenant_id: str, data: SmtpSettingsIn
) -> Mailbox:
    """Store new SMTP settings (password encrypted); the mailbox waits for a test again."""
    security = data.effective_security
    try:  # resolve before the first query, so no transaction waits on DNS
        await runtime.network_policy.check(
            data.host, data.port, plaintext=security is Security.NONE
        )
    except HostPolicyError as exc:
        raise InvalidInputError(exc.code, exc.detail) from None
    mailbox = await get_mailbox(session, tenant_id)
    mailbox.provider = Provider.SMTP
    mailbox.smtp_host = data.host
    mailbox.smtp_port = data.port
    mailbox.smtp_security = security
    mailbox.smtp_username = data.username or mailbox.email
    mailbox.smtp_password_enc = runtime.secrets.encrypt(
        data.password.get_secret_value(), context=mailbox.secret_context(SMTP_PASSWORD)
    )
    clear_oauth(mailbox)
    mark_reconfigured(mailbox)
    await session.flush()
    log.info("smtp settings saved", extra={"tenant_id": tenant_id, "smtp_host": data.host})
    return mailbox


def clear_smtp(mailbox: Mailbox) -> None:
    mailbox.smtp_host = mailbox.smtp_username = mailbox.smtp_security = None
    mailbox.smtp_port = None
    mailbox.smtp_password_enc = None


def clear_oauth(mailbox: Mailbox) -> None:
    mailbox.oauth_account_email = mailbox.oauth_scopes = mailbox.oauth_authorized_at = None
    mailbox.oauth_access_token_enc = mailbox.oauth_refresh_token_enc = None
    mailbox.oauth_expires_at = mailbox.refresh_lock_until = None
    mailbox.token_version += 1


def mark_reconfigured(mailbox: Mailbox) -> None:
    """New connection settings: the mailbox waits for a passing test mail again."""
    mailbox.status = MailboxStatus.PENDING_TEST
    mailbox.settings_version += 1
    mailbox.last_error_code = mailbox.last_error_detail = None
    mailbox.last_error_at = None


def build_sender(mailbox: Mailbox, runtime: Runtime, *, timeout: float | None = None) -> Sender:
    """The driver for the mailbox's connection, secrets decrypted, ready to send."""
    settings = runtime.settings
    smtp_timeout = settings.smtp_timeout.total_seconds()
    if mailbox.provider == Provider.SMTP and mailbox.smtp_password_enc is not None:
        try:
            password = runtime.secrets.decrypt(
                mailbox.smtp_password_enc, context=mailbox.secret_context(SMTP_PASSWORD)
            )
        except SecretDecryptError:
            log.error("stored SMTP password unreadable", extra={"tenant_id": mailbox.tenant_id})
            raise ConflictError(
                "mailbox_secret_unreadable",
                "The stored password cannot be decrypted with the configured keys"
                " (MAILRELAY_SECRET_KEYS); save the SMTP settings again.",
            ) from None
        config = SmtpConfig(
            host=mailbox.smtp_host or "",
            port=mailbox.smtp_port or 0,
            security=Security(mailbox.smtp_security or Security.STARTTLS),
            username=mailbox.smtp_username,
            password=password,
        )
        context = DriverContext(
            tls_context=runtime.tls_context,
            network_policy=runtime.network_policy,
            timeout=min(smtp_timeout, timeout or smtp_timeout),
        )
        return build_driver(Provider.SMTP, config, context)
    if mailbox.provider in (Provider.GOOGLE, Provider.MICROSOFT):
        provider = configured_providers(settings).get(mailbox.provider)
        if provider is None:
            raise ConflictError(
                "provider_not_configured",
                f"The operator has not configured {mailbox.provider} sign-in on this relay.",
            )
        api_root = (
            settings.google_gmail_url
            if mailbox.provider == Provider.GOOGLE
            else settings.microsoft_graph_url
        )
        context = DriverContext(
            tls_context=runtime.tls_context,
            network_policy=runtime.network_policy,
            timeout=smtp_timeout,
            http=runtime.http,
        )
        tokens = MailboxTokens(runtime, provider, mailbox.id)
        return build_driver(mailbox.provider, HttpApiConfig(api_root, tokens), context)
    raise ConflictError(
        "mailbox_not_connected",
        "Connect the mailbox (SMTP, Google or Microsoft) before testing it.",
    )


def make_test_message(mailbox: Mailbox, *, to: str) -> OutgoingMessage:
    """The test mail: from the mailbox itself, so a pass proves it may send as that address."""
    domain = mailbox.email.rpartition("@")[2]
    return OutgoingMessage(
        sender=MailAddress(mailbox.email, mailbox.display_name),
        to=(MailAddress(to),),
        subject=f"Test message from {mailbox.display_name}",
        message_id=make_message_id(domain),
        date=datetime.now(UTC),
        text=(
            f"This message confirms that {mailbox.display_name} <{mailbox.email}> can send mail.\n"
            "From now on, mail of this company leaves from this address.\n"
        ),
    )


async def send_test_mail(runtime: Runtime, *, tenant_id: str, to: str | None) -> Mailbox:
    """Send a real mail through the connection; a pass activates the mailbox.

    A failure is kept as `last_error` (the state stays as it was) and raised as a 422 problem
    with the failure's code. No transaction is open while the mail server is talking.
    """
    timeout = runtime.settings.test_timeout.total_seconds()
    async with runtime.sessionmaker() as session:
        mailbox = await get_mailbox(session, tenant_id)
        tested = (mailbox.id, mailbox.settings_version)
        sender = build_sender(mailbox, runtime, timeout=timeout)
        message = make_test_message(mailbox, to=to or mailbox.email)

    failure: SendError | None = None
    try:
        async with asyncio.timeout(timeout):
            await sender.send(message)
    except SendError as exc:
        failure = exc
    except TimeoutError:
        code = (
            "smtp_timeout" if mailbox.provider == Provider.SMTP else f"{mailbox.provider}_timeout"
        )
        failure = TransientError(code, f"the test did not finish within {timeout:g} s")
    finally:
        await sender.aclose()

    async with runtime.sessionmaker.begin() as session:
        mailbox = await get_mailbox(session, tenant_id, for_update=True)
        if (mailbox.id, mailbox.settings_version) != tested:
            raise ConflictError(
                "mailbox_changed", "The settings changed while the test ran; test again."
            )
        now = utcnow()
        if failure is None:
            if mailbox.status != MailboxStatus.ACTIVE:
                record_event(
                    session,
                    type="mailbox.activated",
                    tenant_id=tenant_id,
                    data={"email": mailbox.email, "provider": mailbox.provider},
                    deliver=runtime.settings.webhook_url is not None,
                )
            mailbox.status = MailboxStatus.ACTIVE
            mailbox.activated_at = now
            mailbox.failing_since = None
            mailbox.last_error_code = mailbox.last_error_detail = mailbox.last_error_at = None
        else:
            mailbox.last_error_code = failure.code
            mailbox.last_error_detail = failure.detail
            mailbox.last_error_at = now
    log.info(
        "test mail %s",
        "passed" if failure is None else "failed",
        extra={"tenant_id": tenant_id, "code": failure.code if failure else None},
    )
    if failure is not None:
        extra = {"reply_code": failure.reply_code} if failure.reply_code else {}
        raise RelayError(
            failure.code, failure.detail, status=422, title="Test mail failed", extra=extra
        )
    return mailbox
