"""Hostile UDP datagrams sent to a connected peer, and the checks that it shrugged them off.

Used by ``test_hostile_datagrams.py`` (rtckit's own peers) and ``test_aiortc_internals.py``
(the guard of :mod:`rtckit._aiortc.receive`). Each datagram goes to the local address of the
peer's nominated ICE pair: the machine's own interface address, delivered locally (aioice
offers no 127.0.0.1 candidate).
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
from typing import Final

from aiortc import RTCPeerConnection
from aiortc.rtcdtlstransport import RTCDtlsTransport

from rtckit import _aiortc

_RANDOM = random.Random(1601)


def _srtp_like(size: int) -> bytes:
    """*size* random bytes whose first byte is 128 to 191 (what aiortc takes for SRTP/SRTCP)."""
    return bytes([_RANDOM.randrange(128, 192)]) + _RANDOM.randbytes(size - 1)


#: Datagrams that reach DTLS/SRTP and that the guard counts (each dropped unread).
DROPPED: Final = {
    "empty": b"",
    "srtp-1601": b"\x80" + bytes(1600),
    "srtp-64k": b"\x80" + bytes(65506),
    "random-srtp-200": _srtp_like(200),
    "random-srtcp-1601": bytes([0x80, 200]) + _RANDOM.randbytes(1599),
    "random-srtp-3000": _srtp_like(3000),
}
#: Datagrams that DTLS itself discards (truncated or unauthenticated records, first byte 20-63).
DISCARDED: Final = {
    "dtls-1": b"\x16",
    "dtls-header-only": bytes([22, 0xFE, 0xFD]) + bytes(10),
    "dtls-length-beyond-end": bytes([23, 0xFE, 0xFD, 0, 1]) + bytes(6) + b"\xff\xff" + bytes(8),
    "dtls-epoch0-alert": bytes([21, 0xFE, 0xFD]) + bytes(8) + b"\x00\x02\x02\x00",
    "dtls-random-63": bytes([63]) + _RANDOM.randbytes(40),
    "dtls-64k": bytes([23, 0xFE, 0xFD]) + bytes(65504),
}


def dtls_transports(pc: RTCPeerConnection) -> list[RTCDtlsTransport]:
    """The distinct DTLS transports of *pc*."""
    found: list[RTCDtlsTransport] = []
    candidates = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        candidates.append(pc.sctp.transport)
    for transport in candidates:
        if all(transport is not t for t in found):
            found.append(transport)
    return found


def dropped(pc: RTCPeerConnection) -> int:
    """Datagrams the guards of *pc*'s DTLS transports dropped."""
    return sum(_aiortc.dropped_datagrams(t) for t in dtls_transports(pc))


def peer_address(pc: RTCPeerConnection) -> tuple[str, int]:
    """The local address of *pc*'s nominated pair, where its peer sends."""
    pair = _aiortc.selected_pair(pc)
    assert pair is not None, "no nominated ICE pair"
    local, _remote = pair
    return local.host, local.port


def send_from_stranger(pc: RTCPeerConnection, datagrams: list[bytes]) -> None:
    """Send *datagrams* to *pc* from a new UDP socket."""
    host, port = peer_address(pc)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as stranger:
        for datagram in datagrams:
            stranger.sendto(datagram, (host, port))


def own_socket(pc: RTCPeerConnection) -> socket.socket:
    """A duplicate of the UDP socket of *pc*'s nominated pair: datagrams sent with it come
    from *pc*'s address (asyncio's transport would not send an empty one). Close it after.

    Relies on aioice's ``Connection._nominated`` and ``CandidatePair.protocol``.
    """
    (ice,) = {id(t.transport): t.transport for t in dtls_transports(pc)}.values()
    transport = _aiortc.ice_connection(ice)._nominated[1].protocol.transport
    return socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))


async def send_hostile(pc: RTCPeerConnection, *, via: socket.socket | None = None) -> None:
    """Send every datagram of :data:`DISCARDED` then :data:`DROPPED` to *pc*, from a new
    socket (a stranger), or with *via* (:func:`own_socket` of the other peer: a forged source
    address looks the same); then wait until the guard dropped the
    :data:`DROPPED` ones (the loop reads in order, so the others went before)."""
    before = dropped(pc)
    datagrams = [*DISCARDED.values(), *DROPPED.values()]
    if via is None:
        send_from_stranger(pc, datagrams)
    else:
        for datagram in datagrams:
            via.sendto(datagram, peer_address(pc))
    async with asyncio.timeout(10):
        while dropped(pc) < before + len(DROPPED):
            if pc.connectionState == "closed":
                break
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)  # the loop would have ended by now
    assert_connected(pc)
    count = dropped(pc) - before
    assert count == len(DROPPED), f"dropped {count} datagrams, not {len(DROPPED)}"


def assert_connected(pc: RTCPeerConnection) -> None:
    """*pc* and each of its DTLS transports are still connected."""
    states = [t.state for t in dtls_transports(pc)]
    expected = ("connected", ["connected"] * len(states))
    assert (pc.connectionState, states) == expected, (
        f"connection, DTLS: {pc.connectionState}, {states}"
    )
