"""SRTP: protecting the full-size RTP packets of other WebRTC stacks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from aiortc.rtcdtlstransport import RTCDtlsTransport
from pylibsrtp import Session
from pylibsrtp._binding import ffi  # type: ignore[import-not-found]  # compiled cffi module, no stub

from rtckit._aiortc.versions import missing_internal

SRTP_BUFFER_BYTES: Final = 2048
"""The size of the buffer :func:`widen_srtp` gives an SRTP session (pylibsrtp's own: 1500).

With it, RTP packets of up to 1904 bytes are protected (the buffer less pylibsrtp's 144-byte
reserve for the SRTP trailer): more than any packet taken out of a 1500-byte datagram, plus the
bytes an SFU may add (an RTX header, header extensions)."""


def widen_srtp(session: Session) -> None:
    """Let *session* protect RTP packets longer than 1356 bytes (idempotent).

    Cause: pylibsrtp 1.0 (aiortc 1.16's SRTP) processes every packet in one 1500-byte buffer
    per session and refuses a packet longer than that buffer less the room it keeps for the
    trailer (144 bytes for SRTP): ``protect()`` raises ``ValueError("packet is too long")``
    for RTP packets over 1356 bytes. aiortc's own packetizers stay under it (about 1300
    bytes), but GStreamer's payloaders (``webrtcbin``, so most WHIP encoders built on it)
    fill a 1400-byte MTU: every packet of theirs over 1356 bytes that an SFU forwards (most
    keyframe fragments) was lost, with a traceback, and so was its retransmission.

    This replaces the session's buffer with one of :data:`SRTP_BUFFER_BYTES`. The data on the
    wire is the same SRTP a stock session makes of a shorter packet; libsrtp itself has no
    such limit.

    Relies on: ``pylibsrtp.Session._cdata`` (a cffi ``char[]``, whose length ``protect()``
    checks) and ``._buffer`` (the ``ffi.buffer`` over it that ``protect()`` copies through).
    """
    cdata = getattr(session, "_cdata", None)
    if cdata is None or not hasattr(session, "_buffer"):
        raise missing_internal("pylibsrtp.Session has no _cdata/_buffer")
    if len(cdata) >= SRTP_BUFFER_BYTES:
        return
    wide = ffi.new("char[]", SRTP_BUFFER_BYTES)
    session._cdata = wide
    session._buffer = ffi.buffer(wide)


def when_keyed(transport: RTCDtlsTransport, key: str, install: Callable[[Any], None]) -> None:
    """Call *install* with the SRTP session *key* (``"_tx_srtp"`` or ``"_rx_srtp"``) of
    *transport*: now if its DTLS handshake is done, else as soon as it is (once per *key* and
    *install*'s name).

    Relies on: ``RTCDtlsTransport._tx_srtp`` / ``._rx_srtp`` (the outgoing / incoming
    ``pylibsrtp.Session``, both set by the handshake before the transport's state becomes
    ``connected``, and before its receive loop starts) and its ``statechange`` event.
    """
    if not hasattr(transport, key):
        raise missing_internal(f"RTCDtlsTransport has no {key}")
    session: Any = getattr(transport, key)
    if session is not None:
        install(session)
        return
    marker = f"_rtckit_keyed{key}_{getattr(install, '__name__', '')}"
    if getattr(transport, marker, False):
        return
    setattr(transport, marker, True)

    def on_state() -> None:
        keyed: Any = getattr(transport, key)
        if keyed is not None:
            install(keyed)
            transport.remove_listener("statechange", on_state)

    transport.on("statechange", on_state)


def widen_transport_srtp(transport: RTCDtlsTransport) -> None:
    """:func:`widen_srtp` for the outgoing SRTP session of *transport*: now if its DTLS
    handshake is done, else as soon as it is (idempotent; see :func:`when_keyed`)."""
    when_keyed(transport, "_tx_srtp", widen_srtp)
