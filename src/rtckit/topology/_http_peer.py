"""A connection negotiated by one HTTP exchange: WHIP publishers and WHEP viewers.

A WHIP or WHEP client sends one SDP offer and gets one answer; the server can never send it a
new offer (it has no channel to the client but the client's own requests), so such a
connection is never renegotiated. :class:`HttpPeer` is what the room strategies keep of one:
its answer, the trickled candidates it is given, and its end (its connection failed or closed,
it did not connect within a timeout, or it was closed), after which the strategy forgets it.
:func:`answer_offer` makes the answer the same way for every kind: aiortc gathers before it
answers, so the answer carries all of the server's candidates and the server never trickles.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiortc import RTCPeerConnection, RTCSessionDescription

from rtckit import _aiortc
from rtckit._aiortc.sdp import candidate_from_sdp
from rtckit.errors import NegotiationError
from rtckit.ice.candidates import CandidatePolicy, filter_sdp_candidates, parse_candidate
from rtckit.peer.session import SessionConfig

__all__ = ["HttpPeer", "answer_offer", "new_peer_connection", "receive_only"]

logger = logging.getLogger(__name__)


def new_peer_connection(config: SessionConfig) -> RTCPeerConnection:
    """A connection for an HTTP-negotiated peer, with *config*'s ICE servers."""
    pc = RTCPeerConnection(config.rtc_configuration())
    # before any transport exists: DTLS with peers whose certificate is RSA (webrtcbin)
    _aiortc.widen_dtls_ciphers(pc)
    _aiortc.install_rtp_routing(pc)
    _aiortc.guard_receive(pc)
    return pc


def receive_only(pc: RTCPeerConnection) -> None:
    """Set every transceiver of *pc* to receive only (the ``prepare`` of
    :func:`answer_offer` for a publisher: nothing is sent to it)."""
    for transceiver in pc.getTransceivers():
        transceiver.direction = "recvonly"


class HttpPeer:
    """One HTTP-negotiated connection of a room (a WHIP publisher, a WHEP viewer).

    ``answer`` is the SDP answer to its offer. It ends when :meth:`aclose` is called, when its
    connection fails or closes, when it has not connected within the timeout given to
    :meth:`watch`, or when its room stops; :meth:`wait_ended` returns then. Subclasses say what
    leaving the room means in :meth:`_detach`.
    """

    #: how logs name this kind of peer
    label = "HTTP peer"

    def __init__(
        self, participant_id: str, pc: RTCPeerConnection, *, policy: CandidatePolicy
    ) -> None:
        self.participant_id = participant_id
        self.answer = ""
        #: why it ended (``None`` while it runs)
        self.end_reason: str | None = None
        #: trickled remote candidates given to its ICE transport
        self.candidates_added = 0
        self._pc = pc
        self._policy = policy
        self._connected = asyncio.Event()
        self._ended = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    @property
    def connection_state(self) -> str:
        """The connection's state (aiortc's ``connectionState``)."""
        return str(self._pc.connectionState)

    @property
    def ended(self) -> bool:
        """Whether it has ended (it left the room)."""
        return self._ended.is_set()

    async def wait_ended(self) -> str:
        """Wait until it ends; return why: ``"closed"`` (:meth:`aclose`),
        ``"connection failed"``/``"connection closed"`` (the remote side hung up or vanished:
        aiortc closes the connection when ICE consent fails),
        ``"timeout"`` (never connected), ``"left"`` (it left the room's signaling),
        ``"room stopped"``."""
        await self._ended.wait()
        return self.end_reason or "closed"

    async def add_candidate(self, candidate: str | None, *, mid: str | None, index: int) -> bool:
        """Add a trickled remote candidate (``candidate:...`` text; ``None``: end of
        candidates) for the m-line *mid* (else number *index*). Returns whether it was used:
        a candidate the session's candidate policy refuses, or a malformed one, is not."""
        if self.ended:
            return False
        pc = self._pc
        if candidate is None:
            await pc.addIceCandidate(None)
            return True
        text = candidate.removeprefix("a=")
        try:
            reason = self._policy.refusal_reason(parse_candidate(text))
            if reason is not None:
                logger.info("%s %s: ignoring candidate %r: %s", self.label, self, text, reason)
                return False
            ice = candidate_from_sdp(text.removeprefix("candidate:"))
            ice.sdpMid = mid
            ice.sdpMLineIndex = index
            await _aiortc.add_trickled_candidate(pc, ice)
        except Exception as exc:  # noqa: BLE001 - aiortc raises ValueError, KeyError...
            logger.info("%s %s: bad candidate %r: %s", self.label, self, text, exc)
            return False
        self.candidates_added += 1
        return True

    def __str__(self) -> str:
        return self.participant_id

    def watch(self, connect_timeout: float) -> None:
        """Follow the connection once answered: it ends if it fails, closes, or has not
        connected within *connect_timeout* seconds."""
        if self._closing is not None:
            return  # it ended meanwhile (its room stopped while the answer was made)
        self._pc.on("connectionstatechange", self._on_state)
        self._watchdog = asyncio.create_task(
            self._watch(connect_timeout), name=f"{self.label}-{self.participant_id}"
        )
        self._on_state()  # it may have changed while the answer was made

    def _on_state(self) -> None:
        state = self._pc.connectionState
        if state == "connected":
            self._connected.set()
        elif state in ("failed", "closed"):
            self._end(f"connection {state}")

    async def _watch(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._connected.wait()
        except TimeoutError:
            self._end("timeout")

    def _end(self, reason: str) -> None:
        if self._closing is None:
            self.end_reason = reason
            self._closing = asyncio.get_running_loop().create_task(
                self._close(), name=f"{self.label}-end-{self.participant_id}"
            )

    async def _close(self) -> None:
        watchdog = self._watchdog
        if watchdog is not None and watchdog is not asyncio.current_task():
            watchdog.cancel()
        await self._detach()
        await self._pc.close()
        self._ended.set()

    async def _detach(self) -> None:
        """Leave the room (what the strategy keeps of it); called once, before the
        connection closes."""

    async def aclose(self, reason: str = "closed") -> None:
        """End it: it leaves the room, its connection closes. Idempotent."""
        self._end(reason)
        assert self._closing is not None
        await asyncio.shield(self._closing)


async def answer_offer(
    peer: HttpPeer,
    offer: str,
    config: SessionConfig,
    prepare: Callable[[RTCPeerConnection], None],
) -> None:
    """Answer *offer* on *peer*'s connection: *prepare* sets up its transceivers (made by the
    offer) before the answer is created. The answer, with all of the server's candidates
    (gathering bounded by ``config.gather_timeout``), goes to ``peer.answer``. The offer's
    candidates that *config*'s candidate policy refuses are dropped. If aiortc cannot answer,
    *peer* is closed and :class:`~rtckit.errors.NegotiationError` raised."""
    pc = peer._pc
    try:
        sdp, refused = filter_sdp_candidates(offer, config.candidate_policy)
        for candidate, reason in refused:
            logger.info("%s %s: ignoring candidate %s: %s", peer.label, peer, candidate, reason)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        _aiortc.bound_gathering(pc, config.gather_timeout)
        prepare(pc)
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:
        await peer.aclose()
        raise NegotiationError(f"cannot answer the offer: {exc}") from exc
    peer.answer = pc.localDescription.sdp
