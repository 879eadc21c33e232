"""The explicit driver registry: a provider name to the function that builds its sender."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from app.senders.base import Sender, TokenSource
from app.senders.gmail import GmailSender
from app.senders.microsoft import GraphSender
from app.senders.netpolicy import NetworkPolicy
from app.senders.smtp import SmtpConfig, SmtpSender


@dataclass(frozen=True)
class DriverContext:
    """What every driver may need from the process."""

    tls_context: ssl.SSLContext
    network_policy: NetworkPolicy
    timeout: float
    http: httpx.AsyncClient | None = None


@dataclass(frozen=True)
class HttpApiConfig:
    """An HTTP provider's API root and the signed-in account's tokens."""

    api_root: str
    tokens: TokenSource


def _smtp(config: Any, context: DriverContext) -> Sender:
    if not isinstance(config, SmtpConfig):
        raise TypeError("the smtp driver takes an SmtpConfig")
    return SmtpSender(
        config,
        tls_context=context.tls_context,
        timeout=context.timeout,
        policy=context.network_policy,
    )


def _gmail(config: Any, context: DriverContext) -> Sender:
    if not isinstance(config, HttpApiConfig) or context.http is None:
        raise TypeError("the google driver takes an HttpApiConfig and an HTTP client")
    return GmailSender(api_root=config.api_root, tokens=config.tokens, http=context.http)


def _graph(config: Any, context: DriverContext) -> Sender:
    if not isinstance(config, HttpApiConfig) or context.http is None:
        raise TypeError("the microsoft driver takes an HttpApiConfig and an HTTP client")
    return GraphSender(graph_url=config.api_root, tokens=config.tokens, http=context.http)


DRIVERS: dict[str, Callable[[Any, DriverContext], Sender]] = {
    "smtp": _smtp,
    "google": _gmail,
    "microsoft": _graph,
}


def build_driver(provider: str, config: Any, context: DriverContext) -> Sender:
    try:
        factory = DRIVERS[provider]
    except KeyError:
        raise ValueError(f"no sender driver for provider {provider!r}") from None
    return factory(config, context)
