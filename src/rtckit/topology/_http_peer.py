"""A room member whose connection an HTTP client negotiated once (a WHIP publisher).

An HTTP client (:mod:`rtckit.whip`) sends one SDP offer and gets one answer: the server cannot
send it a new offer later, so its connection is never renegotiated. The SFU and the MCU both
take such members (:meth:`~rtckit.topology.sfu.SfuServerStrategy.add_publisher`,
:meth:`~rtckit.topology.mcu.McuServerStrategy.add_publisher`); :class:`HttpPeer` is what they
share: it makes the peer connection (DTLS suites widened for RSA-certificate peers such as
GStreamer's webrtcbin, rtckit's RTP routing), answers the offer with all of the server's
candidates, adds trickled candidates, and ends when the connection fails or closes, when it
has not connected in time, or when it is closed. Ending it takes its media out of the room
(the subclass's :meth:`HttpPeer._leave_room`) before its connection closes.
"""

from __future__ import annotations

import asyncio
import logging

from aiortc import RTCPeerConnection, RTCSessionDescription

from rtckit import _aiortc
from rtckit._aiortc.sdp import candidate_from_sdp
from rtckit.errors import NegotiationError
from rtckit.ice.candidates import filter_sdp_candidates, parse_candidate
from rtckit.peer.session import SessionConfig

__all__ = ["HttpPeer"]

logger = logging.getLogger(__name__)


class HttpPeer:
    """One HTTP-negotiated member *participant_id* of a room (see the module documentation).

    ``answer`` is the SDP answer to its offer once :meth:`negotiate` returned.
    """

    def __init__(self, participant_id: str, config: SessionConfig) -> None:
        self.participant_id = participant_id
        self.answer = ""
        #: why it ended (``None`` while it runs)
        self.end_reason: str | None = None
        #: trickled remote candidates given to its ICE transport
        self.candidates_added = 0
        self._config = config
        self._pc = RTCPeerConnection(config.rtc_configuration())
        # before any transport exists: DTLS with peers whose certificate is RSA (webrtcbin)
        _aiortc.widen_dtls_ciphers(self._pc)
        _aiortc.install_rtp_routing(self._pc)
        self._connected = asyncio.Event()
        self._ended = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    @property
    def peer_connection(self) -> RTCPeerConnection:
        """Its connection (the strategy wires its media)."""
        return self._pc

    @property
    def connection_state(self) -> str:
        """The connection's state (aiortc's ``connectionState``)."""
        return str(self._pc.connectionState)

    @property
    def ended(self) -> bool:
        """Whether it has ended (its media left the room)."""
        return self._ended.is_set()

    async def negotiate(self, offer: str, *, direction: str) -> None:
        """Answer *offer* with every m-line set to *direction* (then :meth:`watch`). Raises
        :class:`~rtckit.errors.NegotiationError` (the member ended) if aiortc cannot answer."""
        pc = self._pc
        config = self._config
        try:
            sdp, refused = filter_sdp_candidates(offer, config.candidate_policy)
            for candidate, reason in refused:
                logger.info("%s: ignoring candidate %s: %s", self.participant_id, candidate, reason)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            _aiortc.bound_gathering(pc, config.gather_timeout)
            for transceiver in pc.getTransceivers():
                transceiver.direction = direction
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            await self.aclose()
            raise NegotiationError(f"cannot answer the offer: {exc}") from exc
        self.answer = pc.localDescription.sdp

    def watch(self, connect_timeout: float) -> None:
        """Follow the connection (once its media is in the room): it ends when it fails or
        closes, or if it is not connected within *connect_timeout* seconds."""
        if self._closing is not None:
            return  # ended meanwhile (its room stopped)
        self._pc.on("connectionstatechange", self._on_state)
        self._watchdog = asyncio.create_task(
            self._watch(connect_timeout), name=f"http-peer-{self.participant_id}"
        )
        self._on_state()  # it may have changed while the answer was made

    async def wait_ended(self) -> str:
        """Wait until it ends; return why: ``"closed"`` (:meth:`aclose`),
        ``"connection failed"``/``"connection closed"`` (the remote side hung up or vanished:
        aiortc closes the connection when ICE consent fails),
        ``"timeout"`` (never connected), ``"left"`` (it left the room's signaling)."""
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
            reason = self._config.candidate_policy.refusal_reason(parse_candidate(text))
            if reason is not None:
                logger.info("%s: ignoring candidate %r: %s", self.participant_id, text, reason)
                return False
            ice = candidate_from_sdp(text.removeprefix("candidate:"))
            ice.sdpMid = mid
            ice.sdpMLineIndex = index
            await _aiortc.add_trickled_candidate(pc, ice)
        except Exception as exc:  # noqa: BLE001 - aiortc raises ValueError, KeyError...
            logger.info("%s: bad candidate %r: %s", self.participant_id, text, exc)
            return False
        self.candidates_added += 1
        return True

    async def end(self, reason: str) -> None:
        """End it (its media leaves the room, its connection closes) and say *reason* in
        :meth:`wait_ended`, unless it was ending already. Idempotent."""
        self._end(reason)
        assert self._closing is not None
        await asyncio.shield(self._closing)

    async def aclose(self) -> None:
        """End it: its media leaves the room, its connection closes. Idempotent."""
        await self.end("closed")

    async def _leave_room(self) -> None:
        """Take its media out of the room (the strategy's part; called once, on ending)."""

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
                self._close(), name=f"http-peer-end-{self.participant_id}"
            )

    async def _close(self) -> None:
        watchdog = self._watchdog
        if watchdog is not None and watchdog is not asyncio.current_task():
            watchdog.cancel()
        await self._leave_room()
        await self._pc.close()
        self._ended.set()
