"""Incoming datagrams: nothing a stranger sends ends a DTLS transport's receive loop.

Cause (aiortc 1.14 to 1.16, aioice 0.10 to 0.13, pylibsrtp 1.0): aioice hands every datagram
that is not STUN to the connection, *from any source address* (its ``StunProtocol`` drops the
address). aiortc's ``RTCDtlsTransport`` reads them in one receive loop; once the handshake is
done, that loop ends at the first exception other than ``pylibsrtp.Error``, and the transport
closes: its peer connection goes to ``closed`` for good. Two datagrams anyone who knows (or
scans) a candidate's port can send do that:

* any datagram over 1500 bytes whose first byte is 128 to 191 (SRTP/SRTCP):
  pylibsrtp's ``unprotect()`` copies it into its fixed 1500-byte buffer and raises
  ``ValueError("packet is too long")``, which aiortc does not catch;
* an empty datagram: aiortc reads its first byte (``IndexError``).

:func:`guard_receive` installs two guards on every DTLS transport of a connection:

* the ICE transport's ``_recv`` (what the loop awaits) skips empty datagrams;
* the incoming SRTP session's ``unprotect()`` / ``unprotect_rtcp()`` turn ``ValueError`` into
  ``pylibsrtp.Error``, which aiortc catches and drops (as it drops a packet that fails
  SRTP authentication, which random bytes do).

Each dropped datagram is counted (:func:`dropped_datagrams`). Datagrams from an address
that is not the nominated pair's still reach DTLS and SRTP, which drop them as they drop any
unauthenticated record: filtering by address would not stop a forged source address anyway,
and would need a hook in aioice's protocol.

Relies on: ``RTCPeerConnection.__createDtlsTransport`` (through
:func:`~rtckit._aiortc.transports.on_every_dtls_transport`); ``RTCDtlsTransport.transport`` (the
``RTCIceTransport``) and its ``_recv`` (the coroutine function ``RTCDtlsTransport._recv_next``
awaits for the next datagram, set once in ``RTCIceTransport.__init__``); and
``RTCDtlsTransport._rx_srtp`` (see :func:`~rtckit._aiortc.srtp.when_keyed`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import pylibsrtp
from aiortc.rtcdtlstransport import RTCDtlsTransport

from rtckit._aiortc.srtp import when_keyed
from rtckit._aiortc.transports import on_every_dtls_transport
from rtckit._aiortc.versions import get_internal, missing_internal

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

logger = logging.getLogger(__name__)

_DROPPED: Final = "_rtckit_dropped_datagrams"
_GUARDED: Final = "_rtckit_guard_receive"


def dropped_datagrams(transport: RTCDtlsTransport) -> int:
    """How many datagrams *transport*'s guards dropped: empty ones, and SRTP/SRTCP ones that
    could not be unprotected (too long, failed authentication, replayed)."""
    count: int = getattr(transport, _DROPPED, 0)
    return count


def _count(transport: RTCDtlsTransport) -> None:
    setattr(transport, _DROPPED, dropped_datagrams(transport) + 1)


def _guard_unprotect(
    transport: RTCDtlsTransport, unprotect: Callable[[bytes], bytes]
) -> Callable[[bytes], bytes]:
    def guarded(data: bytes) -> bytes:
        try:
            return unprotect(data)
        except pylibsrtp.Error:
            _count(transport)
            raise
        except ValueError as exc:  # pylibsrtp: "packet is too long" for its buffer
            _count(transport)
            raise pylibsrtp.Error(f"dropped a {len(data)}-byte datagram: {exc}") from exc

    return guarded


def guard_transport_receive(transport: RTCDtlsTransport) -> None:
    """Guard *transport*'s receive loop (idempotent); see the module docstring."""
    if getattr(transport, _GUARDED, False):
        return
    ice = get_internal(transport, "transport")
    recv: Callable[[], Awaitable[bytes]] = get_internal(ice, "_recv")
    if not callable(recv):
        raise missing_internal("RTCIceTransport._recv is not callable")

    async def recv_nonempty() -> bytes:
        while True:
            data = await recv()
            if data:
                return data
            _count(transport)
            logger.debug("dropped an empty datagram")

    def guard_session(session: Any) -> None:
        for name in ("unprotect", "unprotect_rtcp"):
            setattr(session, name, _guard_unprotect(transport, get_internal(session, name)))

    ice._recv = recv_nonempty
    setattr(transport, _GUARDED, True)
    when_keyed(transport, "_rx_srtp", guard_session)


def guard_receive(pc: RTCPeerConnection) -> None:
    """Guard the receive loop of *pc*'s DTLS transports, now and later (idempotent).

    Call it right after creating the connection, next to
    :func:`~rtckit._aiortc.install_rtp_routing` (every rtckit connection does).
    """
    on_every_dtls_transport(pc, guard_transport_receive, _GUARDED)
