"""A peer connection's DTLS transports, now and later."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from aiortc.rtcdtlstransport import RTCDtlsTransport

from rtckit._aiortc.versions import get_internal

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

_CREATE_DTLS_TRANSPORT: Final = "_RTCPeerConnection__createDtlsTransport"


def on_every_dtls_transport(
    pc: RTCPeerConnection, install: Callable[[RTCDtlsTransport], object], marker: str
) -> None:
    """Call *install* on each DTLS transport of *pc*: those it has now, and each one it
    creates later (once per *marker*, which names the hook; *install* must be idempotent).

    Relies on: ``RTCPeerConnection.__createDtlsTransport`` (wrapped on the instance).
    """
    create = get_internal(pc, _CREATE_DTLS_TRANSPORT)
    wrapped = create
    while wrapped is not None and not getattr(wrapped, marker, False):
        wrapped = getattr(wrapped, "_rtckit_wraps", None)
    if wrapped is None:

        def create_dtls_transport() -> RTCDtlsTransport:
            transport: RTCDtlsTransport = create()
            install(transport)
            return transport

        setattr(create_dtls_transport, marker, True)
        create_dtls_transport._rtckit_wraps = create  # type: ignore[attr-defined]
        setattr(pc, _CREATE_DTLS_TRANSPORT, create_dtls_transport)
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    for transport in transports:
        install(transport)
