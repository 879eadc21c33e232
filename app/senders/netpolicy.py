"""Which addresses a tenant-supplied SMTP host may reach (SSRF and DNS-rebinding defence).

A tenant names a host; the relay resolves it once, refuses it unless every address is public or
inside `MAILRELAY_SMTP_ALLOWED_NETWORKS`, and then connects to the checked address itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SUBMISSION_PORTS = frozenset({25, 465, 587, 2525})


def _unmapped(address: IPAddress) -> IPAddress:
    # `::ffff:127.0.0.1` is loopback in disguise: judge the IPv4 address inside.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class HostPolicyError(Exception):
    """The host does not resolve, or resolves to an address the relay must not reach."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class NetworkPolicy:
    """Resolution and address rules for tenant SMTP hosts."""

    allowed_networks: Sequence[IPNetwork] = ()
    dns_timeout: float = 5.0

    def is_allow_listed(self, address: IPAddress) -> bool:
        address = _unmapped(address)
        return any(address in network for network in self.allowed_networks)

    def permits(self, address: IPAddress) -> bool:
        return self.is_allow_listed(address) or _unmapped(address).is_global

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address of `host`, all permitted, or HostPolicyError."""
        try:
            async with asyncio.timeout(self.dns_timeout):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
                )
        except (TimeoutError, OSError) as exc:
            raise HostPolicyError("smtp_host_not_found", f"{host} does not resolve") from exc
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        if not addresses:
            raise HostPolicyError("smtp_host_not_found", f"{host} does not resolve")
        if not all(self.permits(address) for address in addresses):
            raise HostPolicyError(
                "smtp_host_not_allowed",
                f"{host} resolves to an address that is not public; the relay will not connect",
            )
        return addresses

    async def check(self, host: str, port: int, *, plaintext: bool) -> list[IPAddress]:
        """`resolve`, plus the rules that depend on the addresses: port and plaintext."""
        addresses = await self.resolve(host, port)
        trusted = all(self.is_allow_listed(address) for address in addresses)
        if port not in SUBMISSION_PORTS and not trusted:
            ports = ", ".join(map(str, sorted(SUBMISSION_PORTS)))
            raise HostPolicyError(
                "smtp_port_not_allowed", f"port {port} is not a mail submission port ({ports})"
            )
        if plaintext and not trusted:
            raise HostPolicyError(
                "smtp_plaintext_not_allowed",
                "security 'none' would send the password unencrypted over the internet;"
                " use 'starttls' or 'tls'",
            )
        return addresses
