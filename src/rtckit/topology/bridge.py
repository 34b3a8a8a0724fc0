"""Room plumbing shared by every topology: signaling messages <-> peer-session messages.

A room's media sessions (:class:`~rtckit.peer.session.PeerSession`) speak
:mod:`rtckit.peer.signaller` messages; the room's signaling client speaks the signaling
protocol. This module translates between the two, in both directions, and holds what the
mesh, SFU and MCU rooms (client and server side) share on top of that: the room's data
channel, its envelope, the one-line log of a dropped message, and the default session
configuration taken from the server's ``welcome``.

It sits below the topologies: it imports neither the SFU nor the MCU (nor numpy, which the
MCU needs), only the signaling protocol and the peer layer's message types; importing it
loads neither aiortc, PyAV nor aiohttp (:func:`session_config_from_welcome` imports the peer
session, and aiortc with it, when it is called).

Signaling mapping: a session's messages become the signaling protocol's ``offer``,
``answer``, ``candidate``, ``end-of-candidates`` and ``restart``, with the session's
connection generation in the ``session`` field as ``"g<generation>"`` (ASCII digits, at most
nine): :func:`generation_from_session` refuses anything else with a
:class:`~rtckit.errors.RemoteProtocolError`.

Room data messages travel on a pre-negotiated data channel (label :data:`ROOM_CHANNEL_LABEL`,
id :data:`ROOM_CHANNEL_ID`). Through a server peer (SFU, MCU) they carry an envelope: a client
sends ``"<to>\\x00<data>"`` (``to`` empty: everyone), the server relays ``"<from>\\x00<data>"``
(bytes: the same with bytes); see :func:`seal_envelope` and :func:`open_envelope`.

Nothing a peer sends ends a room's reader: every reader (mesh, SFU and MCU, client and server
side) handles each message on its own, and a message it cannot handle is logged as one warning
line naming the sender (:func:`log_dropped`) and dropped.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rtckit.errors import PeerError, RemoteProtocolError
from rtckit.ice import IceConfig
from rtckit.peer.signaller import Description, PeerCandidate, PeerMessage, PeerRestart
from rtckit.signaling import protocol as sp

if TYPE_CHECKING:
    from rtckit.peer.session import PeerSession, SessionConfig
    from rtckit.signaling.client import SignalingClient

__all__ = [
    "ROOM_CHANNEL_ID",
    "ROOM_CHANNEL_LABEL",
    "SignalingSignaller",
    "generation_from_session",
    "log_dropped",
    "open_envelope",
    "peer_message_from_signaling",
    "seal_envelope",
    "send_room_data",
    "session_config_from_welcome",
]

logger = logging.getLogger(__name__)

#: The label of every room's pre-negotiated data channel.
ROOM_CHANNEL_LABEL = "rtckit-room"
#: The SCTP stream id of every room's pre-negotiated data channel.
ROOM_CHANNEL_ID = 1001

_MAX_GENERATION_DIGITS = 9
_MAX_LOGGED = 200  # characters of an error (which may quote a peer's message) in a log line


def generation_from_session(session: str | None) -> int:
    """The connection generation carried in a signaling ``session`` field (``"g3"`` -> 3).

    No ``session`` is generation 0. Anything but ``"g"`` and one to nine ASCII digits raises
    :class:`~rtckit.errors.RemoteProtocolError` (``str.isdigit`` alone would let ``"g\u00b2"``
    through to ``int()``, which raises ``ValueError``).
    """
    if session is None:
        return 0
    digits = session[1:]
    if (
        session[:1] == "g"
        and 0 < len(digits) <= _MAX_GENERATION_DIGITS
        and digits.isascii()
        and digits.isdigit()
    ):
        return int(digits)
    raise RemoteProtocolError(
        f"session {session[:40]!r} is not 'g' and 1 to {_MAX_GENERATION_DIGITS} digits",
        code=sp.ErrorCode.BAD_MESSAGE,
    )


def log_dropped(
    log: logging.Logger, where: str, event: object, exc: Exception, *, sender: str | None = None
) -> None:
    """Log, on one line and without a traceback, an *event* that could not be handled.

    Readers call it for each message they drop, so that a peer's bad message costs one line
    and never ends the reader. *sender* defaults to the event's own ``sender``. The error text
    is cut to one short line: it may quote what the peer sent.
    """
    sender = sender or getattr(event, "sender", None)
    kind = getattr(event, "type", None) or type(event).__name__
    text = " ".join(str(exc).split())
    if len(text) > _MAX_LOGGED:
        text = text[:_MAX_LOGGED] + "..."
    log.warning(
        "%s: dropped %s from %s: %s: %s", where, kind, sender or "?", type(exc).__name__, text
    )


class SignalingSignaller:
    """A :class:`~rtckit.peer.signaller.Signaller` over an rtckit signaling client, to one peer."""

    def __init__(self, client: SignalingClient, remote_id: str) -> None:
        self.client = client
        self.remote_id = remote_id

    @property
    def connected(self) -> bool:
        """Whether the signaling connection is up."""
        return self.client.connected

    async def send(self, message: PeerMessage) -> None:
        """Send *message* to the remote peer as a signaling protocol message."""
        to, session = self.remote_id, f"g{message.generation}"
        if isinstance(message, Description):
            if message.type == "offer":
                await self.client.send_offer(to, message.sdp, session=session)
            else:
                await self.client.send_answer(to, message.sdp, session=session)
        elif isinstance(message, PeerCandidate):
            if message.candidate:
                await self.client.send_candidate(
                    to,
                    message.candidate,
                    sdp_mid=message.sdp_mid,
                    sdp_mline_index=message.sdp_mline_index,
                    session=session,
                )
            else:
                await self.client.send_end_of_candidates(to, session=session)
        else:
            await self.client.send_restart(to, session=session)


def peer_message_from_signaling(message: sp.Message) -> PeerMessage | None:
    """The peer-session message carried by a signaling message, or ``None`` if none.

    Raises :class:`~rtckit.errors.RemoteProtocolError` if its ``session`` field is not a generation.
    """
    if isinstance(message, sp.Offer | sp.Answer):
        return Description(
            type=message.type,
            sdp=message.sdp,
            generation=generation_from_session(message.session),
        )
    if isinstance(message, sp.Candidate):
        return PeerCandidate(
            candidate=message.candidate,
            sdp_mid=message.sdp_mid,
            sdp_mline_index=message.sdp_mline_index,
            generation=generation_from_session(message.session),
        )
    if isinstance(message, sp.EndOfCandidates):
        return PeerCandidate(candidate="", generation=generation_from_session(message.session))
    if isinstance(message, sp.Restart):
        return PeerRestart(generation=generation_from_session(message.session))
    return None


def seal_envelope(peer: str, data: str | bytes) -> str | bytes:
    """Wrap a room data message with a peer id (target from a client, origin from a server)."""
    if isinstance(data, bytes):
        return peer.encode() + b"\x00" + data
    return f"{peer}\x00{data}"


def open_envelope(message: str | bytes) -> tuple[str, str | bytes] | None:
    """The ``(peer id, data)`` of an enveloped message, or ``None`` if it has no envelope."""
    if isinstance(message, bytes):
        peer_b, sep, data = message.partition(b"\x00")
        if not sep:
            return None
        try:
            return peer_b.decode(), data
        except UnicodeDecodeError:
            return None
    peer_s, sep_s, text = message.partition("\x00")
    return (peer_s, text) if sep_s else None


def send_room_data(session: PeerSession, data: str | bytes) -> bool:
    """Send *data* on *session*'s room channel; ``False`` if it was dropped.

    A session that is closed, or whose channel never opened and whose buffer is full (a
    participant that never completes its connection), drops the message: the server relays
    to every participant in turn, and one that takes nothing must not stop the others.
    """
    if session.closed:
        return False
    try:
        session.send(ROOM_CHANNEL_LABEL, data)
    except PeerError as exc:
        logger.debug("%s: room message dropped: %s", session.name, exc)
        return False
    return True


def session_config_from_welcome(client: SignalingClient) -> SessionConfig:
    """The session configuration of a room's client side when the application gives none:
    the ICE servers of the server's ``welcome``, or none at all (never aiortc's default)."""
    from rtckit.peer.session import SessionConfig  # here: it imports aiortc

    servers = client.ice_servers
    return SessionConfig(ice=IceConfig(servers=servers) if servers else IceConfig())
