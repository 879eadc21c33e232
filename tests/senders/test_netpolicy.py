"""Tenant SMTP hosts: public addresses only, unless allow-listed; submission ports only."""

from __future__ import annotations

import ipaddress

import pytest

from app.senders.netpolicy import HostPolicyError, NetworkPolicy

STRICT = NetworkPolicy()
LOOPBACK_ALLOWED = NetworkPolicy(allowed_networks=[ipaddress.ip_network("127.0.0.0/8")])


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT: not private, not global either
        "0.0.0.0",  # noqa: S104 (an address to refuse, not to bind)
        "::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback is not `is_loopback`
        "fd00::1",
        "fe80::1",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not STRICT.permits(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8"])
def test_public_addresses_are_permitted(address: str) -> None:
    assert STRICT.permits(ipaddress.ip_address(address))


def test_allow_list_admits_its_networks_only() -> None:
    assert LOOPBACK_ALLOWED.permits(ipaddress.ip_address("127.0.0.5"))
    assert LOOPBACK_ALLOWED.permits(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert not LOOPBACK_ALLOWED.permits(ipaddress.ip_address("10.0.0.1"))


async def test_resolution_refuses_a_name_of_loopback() -> None:
    with pytest.raises(HostPolicyError) as caught:
        await STRICT.resolve("localhost", 587)
    assert caught.value.code == "smtp_host_not_allowed"
    assert ipaddress.ip_address("127.0.0.1") in await LOOPBACK_ALLOWED.resolve("127.0.0.1", 587)


async def test_unknown_host_is_not_found() -> None:
    with pytest.raises(HostPolicyError) as caught:
        await STRICT.resolve("no-such-host.invalid", 587)
    assert caught.value.code == "smtp_host_not_found"


async def test_ports_and_plaintext_are_checked_for_public_hosts_only() -> None:
    for port in (25, 465, 587, 2525):
        await STRICT.check("8.8.8.8", port, plaintext=False)
    with pytest.raises(HostPolicyError, match="submission port"):
        await STRICT.check("8.8.8.8", 8025, plaintext=False)
    with pytest.raises(HostPolicyError, match="unencrypted"):
        await STRICT.check("8.8.8.8", 587, plaintext=True)
    await LOOPBACK_ALLOWED.check("127.0.0.1", 8025, plaintext=True)
