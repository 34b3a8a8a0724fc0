"""PeerSession against a peer that trickles its candidates, as a browser does.

aiortc puts every candidate in its descriptions; a browser sends its descriptions without
candidates and trickles them afterwards, then an empty candidate (end-of-candidates). A session
must hand those candidates to aioice: if only the end-of-candidates marker reached it, aioice
would fail the connection at once ("no candidate pairs").
"""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
from aiortc import MediaStreamTrack
from aiortc.sdp import SessionDescription, candidate_to_sdp

from rtckit.peer import PeerSession, SessionConfig
from rtckit.peer.signaller import Description, PeerCandidate, PeerMessage
from rtckit.testing import DirectSignaller

CONFIG = SessionConfig(dead_peer_timeout=20)


class TricklingSignaller(DirectSignaller):
    """Delivers descriptions without candidates, then trickles them and end-of-candidates.

    Like Chromium with max-bundle: the candidates go with the first m-line's mid and index.
    """

    def __init__(self) -> None:
        super().__init__()
        self.trickled = 0

    async def send(self, message: PeerMessage) -> None:
        if not isinstance(message, Description):
            await super().send(message)
            return
        lines = message.sdp.split("\r\n")
        kept = [
            line for line in lines if not line.startswith(("a=candidate:", "a=end-of-candidates"))
        ]
        first = SessionDescription.parse(message.sdp).media[0]
        await super().send(attrs.evolve(message, sdp="\r\n".join(kept)))
        for candidate in first.ice_candidates:
            await super().send(
                PeerCandidate(
                    candidate="candidate:" + candidate_to_sdp(candidate),
                    sdp_mid=first.rtp.muxId,
                    sdp_mline_index=0,
                    generation=message.generation,
                )
            )
            self.trickled += 1
        await super().send(PeerCandidate(candidate="", generation=message.generation))


class SilentTrack(MediaStreamTrack):
    """A video track that never produces a frame: negotiation only."""

    kind = "video"

    async def recv(self) -> Any:
        await asyncio.Event().wait()


async def _connected(session: PeerSession, generation: int) -> None:
    while session.generation < generation or session.state != "connected":  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def test_trickled_candidates_reach_ice_both_ways() -> None:
    """Both sides trickle: no candidate is in any description, the call connects anyway.

    Without the trickled candidates, neither side knows an address of the other, no check
    is ever sent, and every connection fails at once and is replaced again and again.
    """
    sig_a, sig_b = TricklingSignaller(), TricklingSignaller()
    a = PeerSession(sig_a, polite=False, config=CONFIG, name="a")
    b = PeerSession(sig_b, polite=True, config=CONFIG, name="b")
    sig_a.target, sig_b.target = b, a
    async with asyncio.timeout(40), a, b:
        a.add_track(SilentTrack())  # added before start: a first offer, then a re-offer
        a.create_data_channel("chat")
        await a.wait_connected(timeout=15)
        await b.wait_connected(timeout=15)
        assert sig_a.trickled > 0
        assert sig_b.trickled > 0
        assert (a.generation, a.replacements) == (0, 0)
        assert (b.generation, b.replacements) == (0, 0)
        # a requested replacement: one new generation, no extra one
        await b.restart()
        await _connected(a, 1)
        await _connected(b, 1)
        assert (a.generation, b.generation) == (1, 1)
        assert (a.replacements, b.replacements) == (1, 1)
