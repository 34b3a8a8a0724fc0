"""DTLS: ciphers for peers with an RSA certificate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender

if TYPE_CHECKING:
    pass

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection
from rtckit._aiortc.versions import get_internal, missing_internal

DTLS_CIPHERS: Final = (
    # aiortc 1.16's own list, in its order (ECDSA: what aiortc's certificate can serve) ...
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:"
    # ... then the same suites for a peer whose certificate is RSA (GStreamer's webrtcbin)
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA"
)
"""The OpenSSL cipher list of rtckit's DTLS contexts (see :func:`widen_dtls_ciphers`)."""

_PC: Final = "_RTCPeerConnection__"  # prefix of its name-mangled attributes


class _InteropCertificate(aiortc.RTCCertificate):
    """aiortc's certificate, whose DTLS contexts also offer the ECDHE-RSA suites."""

    def _create_ssl_context(self, srtp_profiles: Any) -> Any:
        context = super()._create_ssl_context(srtp_profiles)
        context.set_cipher_list(DTLS_CIPHERS.encode())
        return context


def widen_dtls_ciphers(pc: RTCPeerConnection) -> None:
    """Let *pc*'s DTLS handshakes succeed with peers whose certificate is RSA.

    Cause: aiortc (1.14 to 1.16 at least) sets the cipher list of every DTLS context to four
    ECDHE-**ECDSA** suites only (``RTCCertificate._create_ssl_context``). Its own certificate
    is ECDSA, so as the DTLS *server* that is all it could use anyway; but as the DTLS
    *client* its ClientHello then offers nothing a server with an RSA certificate can pick,
    and the handshake fails with "no shared cipher". Browsers use ECDSA certificates, so they
    never hit this; GStreamer's ``webrtcbin`` (many encoders and WHIP clients) uses RSA. aiortc
    is the client whenever it answers an ``actpass`` offer (``a=setup:active``) and whenever
    it offers and the answer says ``a=setup:passive``: rtckit's sessions, MCU and SFU (which
    offer and re-offer) are both sides of that.

    This swaps the connection's certificate (same key and certificate, so the same
    fingerprint) for a subclass whose contexts use :data:`DTLS_CIPHERS`: aiortc's ECDSA
    suites first, then the same suites with RSA authentication. Call it right after creating
    *pc*, before it creates any transport (``addTransceiver``, ``createDataChannel``,
    ``setRemoteDescription``): a DTLS transport keeps the certificate it was created with.

    Relies on: the name-mangled ``RTCPeerConnection.__certificates`` list (read when each
    DTLS transport is created), ``RTCCertificate._key`` / ``._cert`` and
    ``RTCCertificate._create_ssl_context(srtp_profiles)`` returning a pyOpenSSL
    ``SSL.Context``. Raises :class:`~rtckit.errors.InternalsError` if they moved and
    ``ValueError`` if *pc* already has a transport.
    """
    if pc.getTransceivers() or pc.sctp is not None:
        raise ValueError("widen_dtls_ciphers() must run before the connection has a transport")
    certificates = get_internal(pc, f"{_PC}certificates")
    if not isinstance(certificates, list) or not all(
        isinstance(c, aiortc.RTCCertificate) for c in certificates
    ):
        raise missing_internal("RTCPeerConnection.__certificates is no list of RTCCertificate")
    if not callable(getattr(aiortc.RTCCertificate, "_create_ssl_context", None)):
        raise missing_internal("RTCCertificate._create_ssl_context")
    for index, certificate in enumerate(certificates):
        if not isinstance(certificate, _InteropCertificate):
            certificates[index] = _InteropCertificate(
                key=get_internal(certificate, "_key"), cert=get_internal(certificate, "_cert")
            )
