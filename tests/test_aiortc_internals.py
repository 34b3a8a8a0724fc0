"""Each private aiortc/aioice internal rtckit touches, checked against the installed version."""

from __future__ import annotations

# --- peer sessions: rollback, ICE transports, nominated pair (helper "peer") ---------------
import asyncio

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcconfiguration import RTCBundlePolicy

from rtckit import _aiortc
from rtckit.errors import InternalsError


def _pc() -> RTCPeerConnection:
    return RTCPeerConnection(
        RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )


async def _connect(a: RTCPeerConnection, b: RTCPeerConnection) -> None:
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)


async def test_rollback_local_reoffer_then_accept_remote_offer() -> None:
    a, b = _pc(), _pc()
    try:
        a.createDataChannel("x")
        b.createDataChannel("y", negotiated=True, id=5)
        _aiortc.mark_sctp_bundled(b)
        await _connect(a, b)
        # both add a video transceiver and offer: b (polite) rolls back and takes a's offer
        a.addTransceiver("video")
        b.addTransceiver("audio")
        await a.setLocalDescription(await a.createOffer())
        await b.setLocalDescription(await b.createOffer())
        new_mid = b.getTransceivers()[0].mid
        assert new_mid is not None
        _aiortc.rollback_local_offer(b)
        assert b.signalingState == "stable"
        assert b.getTransceivers()[0].mid is None
        await b.setRemoteDescription(a.localDescription)
        answer = await b.createAnswer()
        _aiortc.settle_unoffered_transceivers(b)  # b's audio was not in a's offer
        await b.setLocalDescription(answer)
        await a.setRemoteDescription(b.localDescription)
        assert a.signalingState == b.signalingState == "stable"
        # b's audio transceiver is still to negotiate: its next offer carries it
        offer = await b.createOffer()
        assert "m=audio" in offer.sdp
    finally:
        await a.close()
        await b.close()


async def test_rollback_refuses_first_offer_and_wrong_state() -> None:
    pc = _pc()
    try:
        with pytest.raises(InternalsError):
            _aiortc.rollback_local_offer(pc)
        pc.createDataChannel("x")
        await pc.setLocalDescription(await pc.createOffer())
        with pytest.raises(InternalsError):
            _aiortc.rollback_local_offer(pc)
    finally:
        await pc.close()


async def test_nominated_pair_and_resume_connect() -> None:
    a, b = _pc(), _pc()
    try:
        a.createDataChannel("x")
        assert _aiortc.selected_candidate_pair(a) is None
        await _connect(a, b)
        pair = None
        for _ in range(200):
            pair = _aiortc.selected_candidate_pair(a)
            if pair is not None and a.connectionState == "connected":
                break
            await asyncio.sleep(0.02)
        assert pair is not None
        assert pair.local_type == "host"
        assert not pair.relayed
        assert len(_aiortc.ice_transports(a)) == 1
        await _aiortc.resume_connect(a)  # idempotent once connected
        assert a.connectionState == "connected"
    finally:
        await a.close()
        await b.close()


async def test_internals_still_exist() -> None:
    pc = _pc()
    with pytest.raises(InternalsError):
        _aiortc.mark_sctp_bundled(pc)
    pc.createDataChannel("x")
    _aiortc.mark_sctp_bundled(pc)
    assert pc.sctp is not None
    assert pc.sctp._bundled is True
    for name in (
        "signalingState",
        "pendingLocalDescription",
        "currentLocalDescription",
        "currentRemoteDescription",
        "pendingRemoteDescription",
        "seenMids",
        "setSignalingState",
        "connect",
    ):
        assert hasattr(pc, "_RTCPeerConnection__" + name), name
    transceiver = pc.addTransceiver("video")
    assert hasattr(transceiver, "_RTCRtpTransceiver__mid")
    assert hasattr(transceiver, "_RTCRtpTransceiver__mline_index")
    ice = transceiver.receiver.transport.transport
    assert hasattr(ice._connection, "_nominated")
