"""The exceptions rtckit raises: one tree under :class:`RtcKitError`.

.. code-block:: text

    RtcKitError
    ├── ConfigurationError (ValueError)       bad configuration given to rtckit
    ├── CertificateError                      certificate generation, loading, validity
    │   └── CertificateExpiredError
    ├── CredentialError (PermissionError)     TURN credentials: forged, malformed, expired
    ├── StunFormatError (ValueError)          bytes that are not a well-formed STUN message
    ├── SignalingError                        signaling layer
    │   ├── ProtocolError (ValueError)        a message that breaks the wire protocol
    │   │   ├── LocalProtocolError            ... that rtckit was asked to send (caller's misuse)
    │   │   └── RemoteProtocolError           ... that the remote side sent
    │   ├── AuthError (PermissionError)       a refused room token
    │   ├── RoomError                         unknown room, full room, not joined, unavailable
    │   └── ConnectionClosedError (ConnectionError) signaling connection gone
    ├── PeerError                             peer sessions
    │   ├── NegotiationError (ValueError)     bad or unacceptable SDP, failed negotiation
    │   └── IceError (ConnectionError)        ICE failed or cannot start
    │       └── TurnAuthError                 a TURN server refused the credentials (401)
    ├── TopologyError                         mesh/SFU/MCU room strategies
    ├── WhipError                             a refused WHIP request (its HTTP status)
    ├── SystemComponentError (RuntimeError)   a system program (coturn, ip, ...) missing or failing
    ├── BackplaneError (ConnectionError)      the nodes' shared backplane (Redis) unreachable
    └── InternalsError (RuntimeError)         aiortc/aioice moved an internal rtckit needs

Errors caused by the remote side (a peer or server that misbehaves) and errors caused by the
caller's own misuse are told apart by the class, never by parsing messages: a message that
cannot be encoded raises :class:`LocalProtocolError`, one received that cannot be decoded
:class:`RemoteProtocolError`. Both are a :class:`ProtocolError`; a plain :class:`ProtocolError`
is a server's ``error`` answer to what the client sent (its ``code`` says why).
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BackplaneError",
    "CertificateError",
    "CertificateExpiredError",
    "ConfigurationError",
    "ConnectionClosedError",
    "CredentialError",
    "IceError",
    "InternalsError",
    "LocalProtocolError",
    "NegotiationError",
    "PeerError",
    "ProtocolError",
    "RemoteProtocolError",
    "RoomError",
    "RtcKitError",
    "SignalingError",
    "StunFormatError",
    "SystemComponentError",
    "TopologyError",
    "TurnAuthError",
    "WhipError",
]


class RtcKitError(Exception):
    """Base class of every exception rtckit raises on purpose."""


class ConfigurationError(RtcKitError, ValueError):
    """A configuration value (URI, port, credential, file) is invalid."""


class CertificateError(RtcKitError):
    """A certificate or key cannot be generated, loaded or used."""


class CertificateExpiredError(CertificateError):
    """A certificate is outside its validity period."""


class CredentialError(RtcKitError, PermissionError):
    """A TURN REST credential is malformed, forged or expired."""


class StunFormatError(RtcKitError, ValueError):
    """Bytes received as STUN are not a well-formed STUN message (RFC 8489).

    Raised by :func:`rtckit.stun.codec.parse_message` and the attribute decoders; STUN servers catch
    it, count the datagram as malformed and drop it.
    """


class SignalingError(RtcKitError):
    """Base class of signaling errors.

    ``code`` is the wire error code (a :class:`rtckit.signaling.protocol.ErrorCode` value,
    or a close code for :class:`ConnectionClosedError`) when there is one, else ``None``.
    """

    code: str | int | None

    def __init__(self, *args: object, code: str | int | None = None) -> None:
        super().__init__(*args)
        self.code = code


class ProtocolError(SignalingError, ValueError):
    """A signaling message breaks the wire protocol (bad JSON, wrong types, bad state)."""


class LocalProtocolError(ProtocolError):
    """rtckit was asked to send a message that breaks the protocol (the caller's misuse).

    Raised by :func:`rtckit.signaling.protocol.encode` (a field that is not JSON) and by the
    peer message classes of :mod:`rtckit.peer.signaller` (a negative generation).
    """


class RemoteProtocolError(ProtocolError):
    """The remote side sent a message that breaks the protocol.

    Raised by :func:`rtckit.signaling.protocol.decode`,
    :func:`rtckit.peer.signaller.message_from_dict` and the client when the server answers out
    of turn; the receivers drop such a message and go on.
    """


class AuthError(SignalingError, PermissionError):
    """A room token was refused (expired, forged, wrong room, missing permission)."""


class RoomError(SignalingError):
    """A room cannot be used: unknown, full, the peer is not a member, or (code
    ``unavailable``) the room lives on a node of a cluster that cannot be reached now."""


class ConnectionClosedError(SignalingError, ConnectionError):
    """The signaling connection is closed and cannot be used."""


class PeerError(RtcKitError):
    """Base class of peer-session errors."""


class NegotiationError(PeerError, ValueError):
    """An SDP offer or answer is malformed or cannot be applied."""


class IceError(PeerError, ConnectionError):
    """ICE failed, or cannot start with the given configuration."""


class TurnAuthError(IceError):
    """A TURN server refused the credentials rtckit gave it (STUN error 401)."""


class TopologyError(RtcKitError):
    """A room topology (mesh, SFU, MCU) cannot do what was asked."""


class WhipError(RtcKitError):
    """A WHIP request refused: ``status`` is its HTTP status, ``title`` the status's name, the
    message the ``detail`` of its ``application/problem+json`` body."""

    def __init__(self, detail: str, *, status: int, title: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title


class SystemComponentError(RtcKitError, RuntimeError):
    """A system program rtckit drives (coturn, ip, iptables) is missing or failed."""


class BackplaneError(RtcKitError, ConnectionError):
    """The backplane the nodes of a deployment share (Redis) cannot be reached, or refused an
    operation."""


class InternalsError(RtcKitError, RuntimeError):
    """The installed aiortc or aioice no longer has an internal rtckit relies on."""
