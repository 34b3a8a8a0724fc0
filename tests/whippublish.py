"""The HTTP side of a WHIP client for a :class:`~rtckit.testing._webrtcbin.WebrtcbinPeer`.

webrtcbin makes the offer and gathers; :func:`whip_publish` POSTs the offer, hands webrtcbin the
answer and trickles its candidates by PATCH, as a WHIP client does around its WebRTC stack.
Shared by the integration and browser tests of WHIP with webrtcbin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from yarl import URL

from rtckit.peer.signaller import Description, PeerCandidate
from rtckit.testing._webrtcbin import WebrtcbinPeer
from rtckit.topology.sfu import SfuServerStrategy

WITHIN = 40.0


def trickle_fragment(offer: str, candidates: list[PeerCandidate], *, end: bool) -> str:
    """An RFC 8840 fragment with *candidates* of *offer*'s first m-line (and its end with *end*)."""
    lines = offer.replace("\r\n", "\n").split("\n")
    ice = [ln for ln in lines if ln.startswith(("a=ice-ufrag:", "a=ice-pwd:"))][:2]
    kind = next(ln for ln in lines if ln.startswith("m=")).split()[0].removeprefix("m=")
    mid = next(ln for ln in lines if ln.startswith("a=mid:"))
    body = [*ice, f"m={kind} 9 UDP/TLS/RTP/SAVPF 0", mid]
    body += [f"a={c.candidate.removeprefix('a=')}" for c in candidates if c.candidate]
    if end:
        body.append("a=end-of-candidates")
    return "\r\n".join(body) + "\r\n"


class WhipPublish:
    """The HTTP side of webrtcbin's WHIP client (see :func:`whip_publish`)."""

    def __init__(self, resource: str, offer: str, posted_at: float) -> None:
        self.resource = resource
        self.offer = offer
        #: when the POST was sent (``time.monotonic()``)
        self.posted_at = posted_at
        #: trickle PATCHes sent
        self.patches = 0
        #: the candidates trickled (``a=candidate:...`` lines)
        self.candidates: list[str] = []


@contextlib.asynccontextmanager
async def whip_publish(
    http: aiohttp.ClientSession, url: str, peer: WebrtcbinPeer
) -> AsyncIterator[WhipPublish]:
    """POST *peer*'s offer to the WHIP endpoint *url*, hand it the answer, and trickle its
    candidates by PATCH (204 each) until the ``async with`` ends."""
    messages = peer.messages()
    async with asyncio.timeout(WITHIN):
        offer = None
        early: list[PeerCandidate] = []
        async for message in messages:
            if isinstance(message, Description) and message.type == "offer":
                offer = message.sdp
                break
            if isinstance(message, PeerCandidate):
                early.append(message)
    assert offer is not None, f"webrtcbin made no offer: {peer.reports}, {' | '.join(peer.stderr)}"
    posted_at = time.monotonic()
    async with http.post(url, data=offer, headers={"Content-Type": "application/sdp"}) as response:
        assert response.status == 201, await response.text()
        resource = str(response.url.join(URL(response.headers["Location"])))
        etag = response.headers["ETag"]
        answer = await response.text()
    await peer.send(Description(type="answer", sdp=answer))
    publish = WhipPublish(resource, offer, posted_at)

    async def trickle() -> None:
        pending = list(early)
        async for message in messages:
            if isinstance(message, PeerCandidate):
                pending.append(message)
                end = not message.candidate
                async with http.patch(
                    resource,
                    data=trickle_fragment(offer, pending, end=end),
                    headers={"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": etag},
                ) as patched:
                    assert patched.status == 204, await patched.text()
                publish.patches += 1
                publish.candidates += [c.candidate for c in pending if c.candidate]
                pending = []

    trickling = asyncio.create_task(trickle())
    try:
        yield publish
    finally:
        trickling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await trickling


def assert_forwarded(strategy: SfuServerStrategy, video: str) -> None:
    """The publisher's video (MIME type *video*) and Opus audio were forwarded, not decoded."""
    router = strategy.router
    assert router is not None
    mime = {key.name: pub.mime_type for key, pub in router.publications.items()}
    assert sorted(mime.values()) == sorted(["audio/opus", video]), mime
    stats = strategy.stats()
    assert stats is not None
    assert stats.packets_out > 0
    assert stats.decoders_created == 0
    assert stats.encoders_created == 0
    assert stats.decoders_running == 0


def assert_no_errors(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing was logged at ERROR or above (a packet the SFU failed to forward logs one)."""
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]
