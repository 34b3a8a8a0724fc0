"""ICE candidate lines: a strict parser and a policy for which remote candidates to accept.

Pure: no I/O, no asyncio, no aiortc. :func:`parse_candidate` reads one ``candidate`` attribute
(RFC 8839 section 5.1), with or without its ``a=`` / ``candidate:`` prefix, into a frozen
:class:`IceCandidate`; anything malformed raises :class:`~rtckit.errors.NegotiationError`.

:class:`CandidatePolicy` says which *remote* candidates a peer may try to reach. A remote peer
chooses the addresses our ICE agent sends connectivity checks to, so by default candidates
pointing at loopback, link-local, unspecified, multicast, broadcast or cloud-metadata addresses
are refused: otherwise a peer could make a server probe its own internal services. Labs that
run peers on loopback opt in (``CandidatePolicy(allow_loopback=True)``). Private (RFC 1918,
ULA) addresses are allowed by default, since peers on one LAN connect through them.

:func:`filter_sdp_candidates` applies a policy to a whole SDP before it reaches aiortc.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

import attrs

from rtckit.errors import ConfigurationError, NegotiationError

__all__ = [
    "METADATA_ADDRESSES",
    "CandidatePolicy",
    "IceCandidate",
    "filter_sdp_candidates",
    "parse_candidate",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Cloud instance-metadata endpoints (AWS/GCP/Azure/OpenStack IPv4, AWS IPv6, AWS ECS, Alibaba).
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200")
)

_ICE_CHARS = re.compile(r"^[A-Za-z0-9+/]{1,32}$")
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`{|}~]+$")
# RFC 8839: extension-att-value = *VCHAR (browsers send e.g. "ufrag a/B+"; ice-chars has "/")
_VCHARS = re.compile(r"^[\x21-\x7e]+$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_CANDIDATE_TYPES = frozenset({"host", "srflx", "prflx", "relay"})
_TCP_TYPES = frozenset({"active", "passive", "so"})


def _address(value: str) -> str:
    """Validate a connection address: an IP address or a hostname (e.g. mDNS ``.local``)."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if ":" in value or not _HOSTNAME.match(value) or value.replace(".", "").isdigit():
        raise NegotiationError(f"candidate address {value!r} is neither an IP nor a hostname")
    return value.lower()


def _port(value: str, what: str) -> int:
    if not value.isdigit() or len(value) > 5 or int(value) > 65535:
        raise NegotiationError(f"candidate {what} {value!r} is not a port number")
    return int(value)


@attrs.frozen(kw_only=True)
class IceCandidate:
    """One ICE candidate, as carried in SDP (RFC 8839 section 5.1)."""

    foundation: str
    #: 1 (RTP) or 2 (RTCP); 1..256 allowed.
    component: int
    #: Lowercase transport, ``"udp"`` or ``"tcp"`` (other tokens are kept as given).
    transport: str
    priority: int
    #: Connection address, a canonical IP address string or a lowercase hostname.
    address: str
    port: int
    #: ``"host"``, ``"srflx"``, ``"prflx"`` or ``"relay"`` (other tokens are kept as given).
    type: str
    related_address: str | None = None
    related_port: int | None = None
    #: ``"active"``, ``"passive"`` or ``"so"`` for TCP candidates.
    tcp_type: str | None = None
    #: Other attributes in order, as in ``(("generation", "0"), ("ufrag", "abcd"))``.
    extensions: tuple[tuple[str, str], ...] = ()

    @property
    def ip(self) -> IPAddress | None:
        """The connection address as an IP address, or ``None`` for a hostname."""
        try:
            return ipaddress.ip_address(self.address)
        except ValueError:
            return None

    @property
    def is_mdns(self) -> bool:
        """Whether the address is an mDNS name (``<uuid>.local``) hiding a host address."""
        return self.ip is None and self.address.rstrip(".").endswith(".local")

    def to_sdp(self) -> str:
        """The candidate as a ``candidate:`` attribute value (without ``a=``)."""
        parts = [
            f"candidate:{self.foundation}",
            str(self.component),
            self.transport,
            str(self.priority),
            self.address,
            str(self.port),
            "typ",
            self.type,
        ]
        if self.related_address is not None:
            parts += ["raddr", self.related_address, "rport", str(self.related_port)]
        if self.tcp_type is not None:
            parts += ["tcptype", self.tcp_type]
        for name, value in self.extensions:
            parts += [name, value]
        return " ".join(parts)


def parse_candidate(line: str) -> IceCandidate:
    """Parse one candidate attribute; raise :class:`~rtckit.errors.NegotiationError` if bad.

    Accepts ``a=candidate:...``, ``candidate:...`` or the bare value (as in a trickled
    ``RTCIceCandidateInit.candidate`` string), surrounding whitespace included.
    """
    text = line.strip()
    if text.startswith("a="):
        text = text[2:]
    if text.startswith("candidate:"):
        text = text[len("candidate:") :]
    words = text.split()
    if len(words) < 8:
        raise NegotiationError(f"candidate {line!r} has fewer than 8 fields")
    foundation, component, transport, priority, address, port, typ, cand_type = words[:8]
    if not _ICE_CHARS.match(foundation):
        raise NegotiationError(f"candidate foundation {foundation!r} is not 1-32 ice-chars")
    if not component.isdigit() or not 1 <= int(component) <= 256:
        raise NegotiationError(f"candidate component {component!r} is not 1..256")
    if not _TOKEN.match(transport):
        raise NegotiationError(f"candidate transport {transport!r} is not a token")
    if not priority.isdigit() or len(priority) > 10 or int(priority) > 2**32 - 1:
        raise NegotiationError(f"candidate priority {priority!r} is not 1..2**32-1")
    if typ != "typ":
        raise NegotiationError(f"candidate {line!r}: expected 'typ', found {typ!r}")
    if not _TOKEN.match(cand_type):
        raise NegotiationError(f"candidate type {cand_type!r} is not a token")
    rest = words[8:]
    if len(rest) % 2:
        raise NegotiationError(f"candidate {line!r}: attribute {rest[-1]!r} has no value")
    related_address: str | None = None
    related_port: int | None = None
    tcp_type: str | None = None
    extensions: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, value in zip(rest[::2], rest[1::2], strict=True):
        if name in {"raddr", "rport", "tcptype"}:
            if name in seen:
                raise NegotiationError(f"candidate {line!r}: {name} given twice")
            seen.add(name)
        if name == "raddr":
            related_address = _address(value)
        elif name == "rport":
            related_port = _port(value, "rport")
        elif name == "tcptype":
            if value not in _TCP_TYPES:
                raise NegotiationError(f"candidate tcptype {value!r} is not active/passive/so")
            tcp_type = value
        elif not _TOKEN.match(name):
            raise NegotiationError(f"candidate attribute name {name!r} is not a token")
        elif not _VCHARS.match(value):
            raise NegotiationError(
                f"candidate attribute {name!r} value {value!r} is not visible ASCII"
            )
        else:
            extensions.append((name, value))
    if (related_address is None) != (related_port is None):
        raise NegotiationError(f"candidate {line!r}: raddr and rport go together")
    transport = transport.lower()
    if tcp_type is not None and transport != "tcp":
        raise NegotiationError(f"candidate {line!r}: tcptype on a {transport} candidate")
    return IceCandidate(
        foundation=foundation,
        component=int(component),
        transport=transport,
        priority=int(priority),
        address=_address(address),
        port=_port(port, "port"),
        type=cand_type,
        related_address=related_address,
        related_port=related_port,
        tcp_type=tcp_type,
        extensions=tuple(extensions),
    )


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _check_lower(items: frozenset[str]) -> None:
    if any(item != item.lower() for item in items):
        raise ConfigurationError("transports must be a frozenset of lowercase names")


def _networks(nets: Iterable[str | IPNetwork]) -> tuple[IPNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(n) for n in nets)
    except ValueError as exc:
        raise ConfigurationError(f"blocked_networks: {exc}") from exc


@attrs.frozen(kw_only=True)
class CandidatePolicy:
    """Which remote candidates a peer may send connectivity checks to.

    Every ``allow_*`` flag defaults to the safe choice for a server on the internet.
    """

    allow_loopback: bool = False
    allow_link_local: bool = False
    allow_unspecified: bool = False
    allow_multicast: bool = False
    #: Cloud metadata endpoints (:data:`METADATA_ADDRESSES`), e.g. 169.254.169.254.
    allow_metadata: bool = False
    #: RFC 1918, ULA and CGNAT addresses, allowed by default (LAN peers connect through them).
    allow_private: bool = True
    #: ``<uuid>.local`` hostnames, resolved by the ICE agent through mDNS.
    allow_mdns: bool = True
    #: Other hostnames in candidates, never produced by browsers, refused by default.
    allow_hostnames: bool = False
    #: Transports accepted (lowercase).
    transports: frozenset[str] = attrs.field(
        default=frozenset({"udp", "tcp"}), validator=lambda _i, _a, v: _check_lower(v)
    )
    #: Extra networks always refused, e.g. your own service subnet.
    blocked_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = attrs.field(
        default=(), converter=_networks
    )

    def refusal_reason(self, candidate: IceCandidate) -> str | None:
        """Why *candidate* is refused, or ``None`` if it is allowed."""
        if candidate.transport not in self.transports:
            return f"transport {candidate.transport} not allowed"
        ip = candidate.ip
        if ip is None:
            if candidate.is_mdns:
                return None if self.allow_mdns else "mDNS hostname not allowed"
            return None if self.allow_hostnames else "hostname candidate not allowed"
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # judge ::ffff:127.0.0.1 as 127.0.0.1
        checks = (
            (ip in METADATA_ADDRESSES, self.allow_metadata, "cloud metadata address"),
            (ip.is_unspecified, self.allow_unspecified, "unspecified address"),
            (ip.is_loopback, self.allow_loopback, "loopback address"),
            (ip.is_link_local, self.allow_link_local, "link-local address"),
            (ip.is_multicast, self.allow_multicast, "multicast address"),
            (
                isinstance(ip, ipaddress.IPv4Address) and ip == ipaddress.IPv4Address(2**32 - 1),
                False,
                "broadcast address",
            ),
            (_is_private(ip), self.allow_private, "private address"),
        )
        for matched, allowed, reason in checks:
            if matched and not allowed:
                return f"{reason} {ip} not allowed"
        for network in self.blocked_networks:
            if ip.version == network.version and ip in network:
                return f"address {ip} in blocked network {network}"
        return None

    def allows(self, candidate: IceCandidate) -> bool:
        """Whether *candidate* may be used."""
        return self.refusal_reason(candidate) is None


def _is_private(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv4Address):
        return (
            ip in ipaddress.IPv4Network("10.0.0.0/8")
            or ip in ipaddress.IPv4Network("172.16.0.0/12")
            or ip in ipaddress.IPv4Network("192.168.0.0/16")
            or ip in ipaddress.IPv4Network("100.64.0.0/10")
        )
    return ip in ipaddress.IPv6Network("fc00::/7")


def filter_sdp_candidates(
    sdp: str, policy: CandidatePolicy
) -> tuple[str, tuple[tuple[IceCandidate, str], ...]]:
    """Remove refused ``a=candidate`` lines from *sdp*.

    Returns the new SDP and the refused candidates with their reasons. A malformed candidate
    line raises :class:`~rtckit.errors.NegotiationError`. Line endings are kept as found.
    """
    newline = "\r\n" if "\r\n" in sdp else "\n"
    kept: list[str] = []
    refused: list[tuple[IceCandidate, str]] = []
    for line in sdp.split(newline):
        if line.startswith("a=candidate:"):
            candidate = parse_candidate(line)
            reason = policy.refusal_reason(candidate)
            if reason is not None:
                refused.append((candidate, reason))
                continue
        kept.append(line)
    return newline.join(kept), tuple(refused)
