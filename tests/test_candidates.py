"""Candidate parsing and the remote-candidate policy (pure, synchronous)."""

from __future__ import annotations

import ipaddress

import pytest

from rtckit.errors import NegotiationError
from rtckit.ice.candidates import (
    CandidatePolicy,
    IceCandidate,
    filter_sdp_candidates,
    parse_candidate,
)


def test_parse_host_udp() -> None:
    c = parse_candidate("candidate:842163049 1 udp 1677729535 192.0.2.7 46154 typ host")
    assert c == IceCandidate(
        foundation="842163049",
        component=1,
        transport="udp",
        priority=1677729535,
        address="192.0.2.7",
        port=46154,
        type="host",
    )
    assert c.ip == ipaddress.ip_address("192.0.2.7")
    assert not c.is_mdns


def test_parse_srflx_with_related_and_extensions() -> None:
    line = (
        "a=candidate:1 1 UDP 1694498815 203.0.113.9 50000 typ srflx raddr 10.0.0.2 "
        "rport 50001 generation 0 ufrag Ab12 network-id 1\r\n"
    )
    c = parse_candidate(line)
    assert c.transport == "udp"
    assert (c.type, c.related_address, c.related_port) == ("srflx", "10.0.0.2", 50001)
    assert c.extensions == (("generation", "0"), ("ufrag", "Ab12"), ("network-id", "1"))


@pytest.mark.parametrize("ufrag", ["/Ln4", "a+b/", "+/+/"])
def test_a_browser_ufrag_with_ice_chars_parses(ufrag: str) -> None:
    """Chromium's ufrags are ice-chars, "/" and "+" included (a trickled candidate seen with
    ``ufrag /Ln4`` was refused once, and the connection to that page failed)."""
    line = (
        f"candidate:2044798325 1 udp 2122194687 192.0.2.2 57861 typ host generation 0 "
        f"ufrag {ufrag} network-id 1"
    )
    c = parse_candidate(line)
    assert ("ufrag", ufrag) in c.extensions
    assert c.to_sdp() == line


@pytest.mark.parametrize("value", ["caf\u00e9", "a\x7fb", "a\x01b"])
def test_an_extension_value_that_is_not_visible_ascii_is_refused(value: str) -> None:
    with pytest.raises(NegotiationError, match="not visible ASCII"):
        parse_candidate(f"candidate:1 1 udp 1 192.0.2.2 9 typ host ufrag {value}")


def test_parse_relay_and_round_trip() -> None:
    line = "candidate:abc+/ 2 udp 16777215 198.51.100.1 49170 typ relay raddr 0.0.0.0 rport 9"
    c = parse_candidate(line)
    assert c.component == 2
    assert c.type == "relay"
    assert parse_candidate(c.to_sdp()) == c
    assert c.to_sdp() == line


def test_parse_tcp_candidate() -> None:
    c = parse_candidate("candidate:3 1 tcp 1518280447 192.0.2.3 9 typ host tcptype active")
    assert (c.transport, c.tcp_type, c.port) == ("tcp", "active", 9)


def test_parse_ipv6_canonicalised() -> None:
    c = parse_candidate("candidate:4 1 udp 2122262783 2001:DB8:0:0::1 5000 typ host")
    assert c.address == "2001:db8::1"
    assert isinstance(c.ip, ipaddress.IPv6Address)


def test_parse_mdns_hostname() -> None:
    c = parse_candidate(
        "candidate:5 1 udp 2122260223 1f4712db-ea17-4bcf-a596-105139dfd8bf.local 54321 typ host"
    )
    assert c.ip is None
    assert c.is_mdns
    assert c.address.endswith(".local")


@pytest.mark.parametrize(
    "line",
    [
        "",
        "candidate:",
        "candidate:1 1 udp 1 192.0.2.1 5000 typ",  # 7 fields
        "candidate:1 0 udp 1 192.0.2.1 5000 typ host",  # component 0
        "candidate:1 257 udp 1 192.0.2.1 5000 typ host",
        "candidate:1 x udp 1 192.0.2.1 5000 typ host",
        "candidate:1 1 udp 4294967296 192.0.2.1 5000 typ host",  # priority too big
        "candidate:1 1 udp -5 192.0.2.1 5000 typ host",
        "candidate:1 1 udp 1 192.0.2.1 65536 typ host",
        "candidate:1 1 udp 1 192.0.2.1 port typ host",
        "candidate:1 1 udp 1 192.0.2.1 5000 type host",
        "candidate:1 1 udp 1 999.1.1.1 5000 typ host",  # all-digit name, not an IP
        "candidate:1 1 udp 1 2001:db8::zz 5000 typ host",
        "candidate:1 1 udp 1 bad_host! 5000 typ host",
        "candidate:{} 1 udp 1 192.0.2.1 5000 typ host",  # foundation not ice-chars
        "candidate:123456789012345678901234567890123 1 udp 1 192.0.2.1 5000 typ host",
        "candidate:1 1 udp 1 192.0.2.1 5000 typ srflx raddr 10.0.0.1",  # odd attribute
        "candidate:1 1 udp 1 192.0.2.1 5000 typ srflx raddr 10.0.0.1 rport x",
        "candidate:1 1 udp 1 192.0.2.1 5000 typ srflx raddr 10.0.0.1 generation 0",
        "candidate:1 1 udp 1 192.0.2.1 5000 typ srflx rport 1 rport 2 raddr 10.0.0.1",
        "candidate:1 1 udp 1 192.0.2.1 5000 typ host tcptype active",  # tcptype on udp
        "candidate:1 1 tcp 1 192.0.2.1 9 typ host tcptype sideways",
        "candidate:1 1 u(p 1 192.0.2.1 5000 typ host",
    ],
)
def test_malformed_raises_negotiation_error(line: str) -> None:
    with pytest.raises(NegotiationError):
        parse_candidate(line)


def _cand(address: str, transport: str = "udp") -> IceCandidate:
    return parse_candidate(f"candidate:1 1 {transport} 100 {address} 5000 typ host")


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
    ],
)
def test_default_policy_refuses(address: str, reason: str) -> None:
    why = CandidatePolicy().refusal_reason(_cand(address))
    assert why is not None
    assert reason in why
    assert not CandidatePolicy().allows(_cand(address))


@pytest.mark.parametrize(
    "address",
    ["192.0.2.1", "198.51.100.7", "10.1.2.3", "192.168.1.5", "2001:db8::1", "fd12::1", "x.local"],
)
def test_default_policy_allows(address: str) -> None:
    assert CandidatePolicy().allows(_cand(address))


def test_lab_policy_opts_in() -> None:
    lab = CandidatePolicy(allow_loopback=True, allow_link_local=True)
    assert lab.allows(_cand("127.0.0.1"))
    assert lab.allows(_cand("fe80::1"))
    # Metadata stays refused unless asked for explicitly, even when link-local is allowed.
    assert not lab.allows(_cand("169.254.169.254"))
    assert CandidatePolicy(allow_metadata=True, allow_link_local=True).allows(
        _cand("169.254.169.254")
    )


def test_policy_private_mdns_hostnames_transports_and_blocklist() -> None:
    assert not CandidatePolicy(allow_private=False).allows(_cand("10.0.0.1"))
    assert not CandidatePolicy(allow_private=False).allows(_cand("fd12::1"))
    assert not CandidatePolicy(allow_mdns=False).allows(_cand("abc.local"))
    assert not CandidatePolicy().allows(_cand("turn.example.com"))
    assert CandidatePolicy(allow_hostnames=True).allows(_cand("turn.example.com"))
    assert not CandidatePolicy(transports=frozenset({"udp"})).allows(_cand("192.0.2.1", "tcp"))
    blocked = CandidatePolicy(blocked_networks=["192.0.2.0/24", "2001:db8::/32"])
    assert not blocked.allows(_cand("192.0.2.9"))
    assert not blocked.allows(_cand("2001:db8::9"))
    assert blocked.allows(_cand("198.51.100.9"))


def test_filter_sdp_candidates() -> None:
    sdp = "\r\n".join(
        [
            "v=0",
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
            "a=candidate:1 1 udp 100 127.0.0.1 5000 typ host",
            "a=candidate:2 1 udp 100 198.51.100.11 5000 typ srflx raddr 10.0.1.2 rport 5000",
            "a=candidate:3 1 udp 100 169.254.169.254 80 typ host",
            "a=end-of-candidates",
            "",
        ]
    )
    filtered, refused = filter_sdp_candidates(sdp, CandidatePolicy())
    assert "198.51.100.11" in filtered
    assert "127.0.0.1" not in filtered
    assert "169.254.169.254" not in filtered
    assert filtered.endswith("a=end-of-candidates\r\n")
    assert [c.address for c, _ in refused] == ["127.0.0.1", "169.254.169.254"]
    with pytest.raises(NegotiationError):
        filter_sdp_candidates("a=candidate:broken\n", CandidatePolicy())
