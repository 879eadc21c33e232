"""The explicit driver registry: a provider name to the function that builds its sender."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.senders.base import Sender
from app.senders.netpolicy import NetworkPolicy
from app.senders.smtp import SmtpConfig, SmtpSender


@dataclass(frozen=True)
class DriverContext:
    """What every driver may need from the process."""

    tls_context: ssl.SSLContext
    network_policy: NetworkPolicy
    timeout: float


def _smtp(config: Any, context: DriverContext) -> Sender:
    if not isinstance(config, SmtpConfig):
        raise TypeError("the smtp driver takes an SmtpConfig")
    return SmtpSender(
        config,
        tls_context=context.tls_context,
        timeout=context.timeout,
        policy=context.network_policy,
    )


DRIVERS: dict[str, Callable[[Any, DriverContext], Sender]] = {
    "smtp": _smtp,
}


def build_driver(provider: str, config: Any, context: DriverContext) -> Sender:
    try:
        factory = DRIVERS[provider]
    except KeyError:
        raise ValueError(f"no sender driver for provider {provider!r}") from None
    return factory(config, context)
