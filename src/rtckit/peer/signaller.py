"""What a peer session sends to, and receives from, the other side (pure: no I/O).

A :class:`~rtckit.peer.session.PeerSession` does not know how its messages travel. It calls a
:class:`Signaller` (rtckit signaling, the memory transport, or a direct in-process pair) to send
:class:`Description`, :class:`PeerCandidate` and :class:`PeerRestart` messages, and the
application feeds incoming ones to :meth:`~rtckit.peer.session.PeerSession.receive`.

Every message carries the *generation* of the connection it belongs to: a session bumps its
generation each time it replaces its ``RTCPeerConnection`` (see :doc:`/topics/ice-restart`),
and messages of an older generation are dropped on arrival.

:func:`message_to_dict` and :func:`message_from_dict` give the JSON shape used in signaling
payloads (the same shape the browser module ``rtckit.js`` uses).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import attrs

from rtckit._deprecated import renamed
from rtckit.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "Description",
    "PeerCandidate",
    "PeerMessage",
    "PeerRestart",
    "Signaller",
    "message_from_dict",
    "message_to_dict",
]


def _nonnegative(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise LocalProtocolError(f"{attribute.name} must be >= 0, got {value}")


@attrs.frozen(kw_only=True)
class Description:
    """An SDP offer or answer."""

    type: str = attrs.field(validator=attrs.validators.in_(("offer", "answer")))
    sdp: str
    generation: int = attrs.field(default=0, validator=_nonnegative)


@attrs.frozen(kw_only=True)
class PeerCandidate:
    """A trickled ICE candidate (``candidate`` is the SDP attribute value, or ``""`` at the end)."""

    candidate: str
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None
    generation: int = attrs.field(default=0, validator=_nonnegative)


@attrs.frozen(kw_only=True)
class PeerRestart:
    """The sender replaced its connection: the receiver must move to *generation* too."""

    generation: int = attrs.field(validator=_nonnegative)


PeerMessage = Description | PeerCandidate | PeerRestart

# Deprecated names: rtckit.signaling.protocol has the wire messages Candidate and Restart.
__getattr__ = renamed(
    __name__,
    {
        "Candidate": ("rtckit.peer.signaller.PeerCandidate", PeerCandidate),
        "Restart": ("rtckit.peer.signaller.PeerRestart", PeerRestart),
    },
)


@runtime_checkable
class Signaller(Protocol):
    """How a session reaches the other side. Implementations must keep message order."""

    async def send(self, message: PeerMessage) -> None:
        """Deliver *message* to the remote session (raise ``ConnectionClosedError`` if gone)."""

    @property
    def connected(self) -> bool:
        """Whether messages can currently reach the other side (enables automatic restarts)."""


def message_to_dict(message: PeerMessage) -> dict[str, Any]:
    """The JSON-ready form of *message* (``{"kind": ..., ...}``)."""
    if isinstance(message, Description):
        return {
            "kind": "description",
            "type": message.type,
            "sdp": message.sdp,
            "generation": message.generation,
        }
    if isinstance(message, PeerCandidate):
        return {
            "kind": "candidate",
            "candidate": message.candidate,
            "sdpMid": message.sdp_mid,
            "sdpMLineIndex": message.sdp_mline_index,
            "generation": message.generation,
        }
    return {"kind": "restart", "generation": message.generation}


def message_from_dict(data: object) -> PeerMessage:
    """Parse the form made by :func:`message_to_dict`.

    Raises :class:`~rtckit.errors.RemoteProtocolError` if *data* is not a valid peer message.
    """
    if not isinstance(data, dict):
        raise RemoteProtocolError("a peer message must be an object")
    kind = data.get("kind")
    generation = data.get("generation", 0)
    if not isinstance(generation, int) or isinstance(generation, bool):
        raise RemoteProtocolError("generation must be an integer")
    try:
        if kind == "description":
            type_, sdp = data.get("type"), data.get("sdp")
            if not isinstance(type_, str) or not isinstance(sdp, str):
                raise RemoteProtocolError("description needs string type and sdp")
            return Description(type=type_, sdp=sdp, generation=generation)
        if kind == "candidate":
            candidate, mid, index = (
                data.get("candidate"),
                data.get("sdpMid"),
                data.get("sdpMLineIndex"),
            )
            if not isinstance(candidate, str):
                raise RemoteProtocolError("candidate must be a string")
            if mid is not None and not isinstance(mid, str):
                raise RemoteProtocolError("sdpMid must be a string or null")
            if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
                raise RemoteProtocolError("sdpMLineIndex must be an integer or null")
            return PeerCandidate(
                candidate=candidate, sdp_mid=mid, sdp_mline_index=index, generation=generation
            )
        if kind == "restart":
            return PeerRestart(generation=generation)
    except ValueError as exc:  # attrs validators
        raise RemoteProtocolError(str(exc)) from exc
    raise RemoteProtocolError(f"unknown peer message kind {kind!r}")
