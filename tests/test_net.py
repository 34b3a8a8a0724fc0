"""This machine's LAN addresses (rtckit.net): usable certificate names, the same as iproute2's."""

from __future__ import annotations

import ipaddress
import subprocess

from cryptography import x509

from rtckit.certs import parse_host
from rtckit.net import lan_addresses
from rtckit.testing import require_executable


def test_lan_addresses_are_usable_certificate_names() -> None:
    addresses = lan_addresses()
    for address in addresses:
        assert not address.is_loopback
        assert not address.is_link_local
        assert parse_host(str(address)) == x509.IPAddress(address)
    assert [a.version for a in addresses] == sorted(a.version for a in addresses)
    with_loopback = lan_addresses(include_loopback=True)
    assert set(addresses) <= set(with_loopback)
    assert ipaddress.IPv4Address("127.0.0.1") in with_loopback


def test_lan_addresses_agree_with_iproute2() -> None:
    ip = require_executable("ip", hint="apt-get install iproute2")
    result = subprocess.run(
        [ip, "-o", "addr", "show"], capture_output=True, text=True, timeout=30, check=True
    )
    expected: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for line in result.stdout.splitlines():
        fields = line.split()
        address = ipaddress.ip_interface(fields[3]).ip
        if address.is_loopback or address.is_link_local:
            continue
        if "temporary" in fields or "tentative" in fields or "dadfailed" in fields:
            continue
        expected.add(address)
    assert set(lan_addresses()) == expected
