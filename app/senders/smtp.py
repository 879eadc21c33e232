"""The SMTP driver: one authenticated aiosmtplib session per mailbox, reused across messages.

STARTTLS is always required when configured (never opportunistic), tenant hosts are checked by
`NetworkPolicy` and connected to by the checked address (the name still drives SNI and the
certificate check), and every aiosmtplib or `ssl` error is mapped to one failure class.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from app.senders.base import (
    CredentialsError,
    MessageRejectedError,
    SendError,
    SendResult,
    TransientError,
    UnknownOutcomeError,
)
from app.senders.message import OutgoingMessage
from app.senders.netpolicy import HostPolicyError, IPAddress, NetworkPolicy

log = logging.getLogger(__name__)


class Security(enum.StrEnum):
    TLS = "tls"
    STARTTLS = "starttls"
    NONE = "none"


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to submit mail; the password never appears in `repr`."""

    host: str
    port: int
    security: Security
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        """`smtp://user:pass@host:587?security=starttls` or `smtps://user:pass@host:465`."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("an SMTP URL looks like smtp://user:pass@host:587?security=starttls")
        query = parse_qs(parts.query)
        if parts.scheme == "smtps":
            security = Security.TLS
        elif "security" in query:
            security = Security(query["security"][0])
        else:
            security = Security.STARTTLS if parts.port in (None, 587) else Security.NONE
        default_port = {Security.TLS: 465, Security.STARTTLS: 587, Security.NONE: 25}[security]
        return cls(
            host=parts.hostname,
            port=parts.port or default_port,
            security=security,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


def make_tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system trust store plus `MAILRELAY_SMTP_CA_FILE`, hostname checks on."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


class SmtpSender:
    """A reusable SMTP session: connects on first use, reconnects after a drop, sends serially.

    With a `policy`, the host is a tenant's and is checked before every connect; without one it
    is the operator's own relay and aiosmtplib resolves it directly.
    """

    def __init__(
        self,
        config: SmtpConfig,
        *,
        tls_context: ssl.SSLContext,
        timeout: float,
        policy: NetworkPolicy | None = None,
    ) -> None:
        self.config = config
        self._tls_context = tls_context
        self._timeout = timeout
        self._policy = policy
        self._smtp: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()
        self._phase = "connect"

    async def send(
        self, message: OutgoingMessage, *, envelope_from: str | None = None
    ) -> SendResult:
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout):
                    smtp = await self._connected()
                    return await self._transact(
                        smtp, message, envelope_from or message.sender.email
                    )
            except SendError:
                raise
            except TimeoutError as exc:
                self._drop()
                raise TransientError(
                    "smtp_timeout",
                    f"no answer from {self.config.host}:{self.config.port}"
                    f" within {self._timeout:g} s",
                    connection_failure=True,
                ) from exc

    async def aclose(self) -> None:
        async with self._lock:
            smtp, self._smtp = self._smtp, None
            if smtp is not None and smtp.is_connected:
                try:
                    await smtp.quit(timeout=5)
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    smtp.close()

    def _drop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._smtp is not None and self._smtp.is_connected:
            try:
                await self._smtp.noop()
                return self._smtp
            except (aiosmtplib.SMTPException, OSError):
                self._drop()
        self._smtp = await self._connect()
        return self._smtp

    async def _connect(self) -> aiosmtplib.SMTP:
        config = self.config
        options: dict[str, object] = {
            "hostname": config.host,
            "use_tls": config.security is Security.TLS,
            "start_tls": config.security is Security.STARTTLS,
            "tls_context": self._tls_context,
            "timeout": self._timeout,
            "username": config.username,
            "password": config.password,
        }
        if self._policy is None:
            options["port"] = config.port
        else:
            options["sock"] = await self._open_socket(self._policy)
        smtp = aiosmtplib.SMTP(**options)  # type: ignore[arg-type]
        try:
            await smtp.connect()
        except BaseException as exc:
            smtp.close()
            if isinstance(exc, Exception):
                raise classify(exc, phase="connect", config=config) from exc
            raise
        return smtp

    async def _open_socket(self, policy: NetworkPolicy) -> socket.socket:
        config = self.config
        try:
            addresses = await policy.check(
                config.host, config.port, plaintext=config.security is Security.NONE
            )
        except HostPolicyError as exc:
            if exc.code == "smtp_host_not_found":
                raise TransientError(exc.code, exc.detail, connection_failure=True) from exc
            raise CredentialsError(exc.code, exc.detail) from exc
        error: OSError | None = None
        for address in addresses:
            try:
                return await _connect_socket(address, config.port)
            except OSError as exc:
                error = exc
        raise TransientError(
            "smtp_connect_failed",
            f"could not connect to {config.host}:{config.port} ({_reason(error)})",
            connection_failure=True,
        ) from error

    async def _transact(
        self, smtp: aiosmtplib.SMTP, message: OutgoingMessage, envelope_from: str
    ) -> SendResult:
        options: list[str] = []
        encoding = "ascii"
        if message.needs_smtputf8:
            if not smtp.supports_extension("smtputf8"):
                raise MessageRejectedError(
                    "smtp_utf8_unsupported",
                    "an address has a non-ASCII local part and the server lacks SMTPUTF8",
                )
            options, encoding = ["SMTPUTF8"], "utf-8"
        data = message.as_bytes()
        self._phase = "mail"
        try:
            await smtp.mail(envelope_from, options=options, encoding=encoding)
            self._phase = "rcpt"
            refused: dict[str, tuple[int, str]] = {}
            for recipient in message.recipients:
                try:
                    await smtp.rcpt(recipient, encoding=encoding)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    refused[recipient] = (exc.code, exc.message)
            accepted = tuple(r for r in message.recipients if r not in refused)
            if not accepted:
                await _reset(smtp)
                raise _all_refused(refused)
            self._phase = "data"
            await smtp.data(data)
        except SendError:
            raise
        except Exception as exc:
            error = classify(exc, phase=self._phase, config=self.config)
            if isinstance(error, MessageRejectedError | CredentialsError) and smtp.is_connected:
                await _reset(smtp)
            else:
                self._drop()
            raise error from exc
        return SendResult(accepted=accepted, refused=refused)


async def _connect_socket(address: IPAddress, port: int) -> socket.socket:
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (str(address), port))
    except BaseException:
        sock.close()
        raise
    return sock


async def _reset(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()


def _all_refused(refused: dict[str, tuple[int, str]]) -> SendError:
    summary = "; ".join(f"{rcpt}: {code} {text}" for rcpt, (code, text) in refused.items())
    codes = [code for code, _ in refused.values()]
    if all(code >= 500 for code in codes):
        return MessageRejectedError(
            "smtp_rejected", f"every recipient was refused: {summary}", reply_code=codes[0]
        )
    return TransientError("smtp_rejected", f"recipients deferred: {summary}", reply_code=min(codes))


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "no address"
    return getattr(exc, "strerror", None) or exc.__class__.__name__


def _tls_detail(exc: ssl.SSLError, config: SmtpConfig) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the server's certificate is not trusted: {exc.verify_message}"
    if exc.reason == "WRONG_VERSION_NUMBER" and config.security is Security.TLS:
        return (
            f"port {config.port} did not answer with TLS; a STARTTLS port (usually 587)"
            " needs security 'starttls'"
        )
    return f"the TLS handshake failed ({exc.reason or exc.__class__.__name__})"


def classify(exc: Exception, *, phase: str, config: SmtpConfig) -> SendError:
    """Map an aiosmtplib or `ssl` error raised in `phase` (connect, mail, rcpt, data)."""
    where = f"{config.host}:{config.port}"
    tls_error = exc if isinstance(exc, ssl.SSLError) else exc.__cause__
    if isinstance(tls_error, ssl.SSLError):
        return TransientError(
            "smtp_tls_failed", _tls_detail(tls_error, config), connection_failure=True
        )
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError) and exc.code < 500:
        # 454 "temporary authentication failure": the server's trouble, not the password.
        return TransientError(
            "smtp_auth_failed",
            f"{where} could not check the login now ({exc.code} {exc.message})",
            reply_code=exc.code,
        )
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return CredentialsError(
            "smtp_auth_failed",
            f"{where} refused the username or password ({exc.code} {exc.message})",
            reply_code=exc.code,
        )
    if isinstance(exc, aiosmtplib.SMTPConnectTimeoutError):
        hint = " (port 465 usually needs security 'tls')" if config.port == 465 else ""
        return TransientError(
            "smtp_timeout", f"{where} sent no greeting in time{hint}", connection_failure=True
        )
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | TimeoutError):
        code = "smtp_timeout" if isinstance(exc, TimeoutError) else "smtp_connect_failed"
        what = "timed out" if isinstance(exc, TimeoutError) else "closed the connection"
        if phase == "data":
            return UnknownOutcomeError(code, f"{where} {what} while receiving the message")
        return TransientError(code, f"{where} {what}", connection_failure=phase == "connect")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _classify_reply(exc, phase=phase, where=where)
    if isinstance(exc, aiosmtplib.SMTPException):
        text = exc.message.lower()
        if "starttls" in text:
            return TransientError(
                "smtp_tls_failed",
                f"{where} does not offer STARTTLS; the relay will not log in without TLS",
                connection_failure=True,
            )
        if "auth" in text:
            return CredentialsError(
                "smtp_auth_failed", f"{where} offers no authentication method the relay can use"
            )
        return TransientError("smtp_connect_failed", f"{where}: {exc.message}")
    if isinstance(exc, OSError):
        return TransientError(
            "smtp_connect_failed",
            f"could not connect to {where} ({_reason(exc)})",
            connection_failure=True,
        )
    return TransientError("smtp_error", f"{where}: unexpected {exc.__class__.__name__}")


def _classify_reply(exc: aiosmtplib.SMTPResponseException, *, phase: str, where: str) -> SendError:
    reply = f"{exc.code} {exc.message}"
    if exc.code == 530:
        return CredentialsError(
            "smtp_auth_failed", f"{where} requires authentication ({reply})", reply_code=530
        )
    if 400 <= exc.code < 500 or phase == "connect":
        return TransientError(
            "smtp_rejected",
            f"{where} answered {reply}",
            reply_code=exc.code,
            connection_failure=phase == "connect",
        )
    if phase == "mail" and exc.code != 552:
        # The envelope sender itself is refused: the mailbox may not send as this address.
        return CredentialsError(
            "smtp_rejected", f"{where} refused the sender: {reply}", reply_code=exc.code
        )
    return MessageRejectedError(
        "smtp_rejected", f"{where} refused the message: {reply}", reply_code=exc.code
    )
