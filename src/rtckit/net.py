"""This machine's network addresses, as other machines on the LAN reach it.

:func:`lan_addresses` lists them without sending anything (from ``/proc`` on Linux, else from
the machine's own name), for the names of a development certificate and the URLs the demo
prints.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from pathlib import Path
from typing import TypeAlias

__all__ = [
    "IPAddress",
    "lan_addresses",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
"""An IPv4 or IPv6 address."""


def _proc_ipv4(text: str) -> list[ipaddress.IPv4Address]:
    found: list[ipaddress.IPv4Address] = []
    last: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("|--", "+--")):
            last = stripped[3:].split()[0]
        elif stripped == "/32 host LOCAL" and last is not None:
            with contextlib.suppress(ValueError):
                address = ipaddress.IPv4Address(last)
                if address not in found:
                    found.append(address)
    return found


_IFA_F_SKIP = 0x01 | 0x08 | 0x40  # temporary (privacy), DAD failed, tentative


def _proc_ipv6(text: str) -> list[ipaddress.IPv6Address]:
    found: list[ipaddress.IPv6Address] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        try:
            address = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
            flags = int(fields[4], 16)
        except ValueError:
            continue
        if not flags & _IFA_F_SKIP and address not in found:
            found.append(address)
    return found


def _resolver_addresses() -> list[IPAddress]:
    hostname = socket.gethostname()
    if not hostname or hostname.endswith(".local"):
        return []  # ".local" names resolve by multicast DNS: that would send packets
    try:
        infos = socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    found: list[IPAddress] = []
    for info in infos:
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if address not in found:
                found.append(address)
    return found


def lan_addresses(*, include_loopback: bool = False) -> list[IPAddress]:
    """Return this machine's IP addresses that other devices may reach, IPv4 first.

    Sends nothing on the network. On Linux it reads ``/proc/net/fib_trie`` and
    ``/proc/net/if_inet6``; elsewhere it resolves the machine's own name (which the system
    answers from ``/etc/hosts`` or its own records; ``.local`` names are skipped because they
    would need multicast DNS). Link-local and temporary IPv6 addresses are left out: they make
    poor certificate names. Returns ``[]`` when nothing can be found.
    """
    addresses: list[IPAddress] = []
    try:
        addresses += _proc_ipv4(Path("/proc/net/fib_trie").read_text())
        addresses += _proc_ipv6(Path("/proc/net/if_inet6").read_text())
        from_proc = True
    except OSError:
        from_proc = False
    if not from_proc:
        addresses = _resolver_addresses()
    result = [
        address
        for address in addresses
        if not address.is_link_local
        and not address.is_unspecified
        and not address.is_multicast
        and (include_loopback or not address.is_loopback)
    ]
    return sorted(dict.fromkeys(result), key=lambda a: (a.version, a.packed))
