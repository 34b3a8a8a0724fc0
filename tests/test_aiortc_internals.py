"""Tests that fail loudly when an aiortc upgrade moves an internal rtckit relies on."""

from __future__ import annotations

# --- mcu ---
import asyncio

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import VideoStreamTrack
from aiortc.rtp import RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPsfbPacket

from rtckit._aiortc import on_keyframe_request


async def test_keyframe_request_hook_sees_pli_and_fir() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        sender = pc.addTrack(VideoStreamTrack())
        calls: list[int] = []
        on_keyframe_request(sender, lambda: calls.append(1))
        for fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            packet = RtcpPsfbPacket(fmt=fmt, ssrc=1234, media_ssrc=sender._ssrc)
            async with asyncio.timeout(5):
                await sender._handle_rtcp_packet(packet)
        assert calls == [1, 1]
        # the original still ran: aiortc's own flag is set
        assert sender._RTCRtpSender__force_keyframe is True  # type: ignore[attr-defined]
    finally:
        await pc.close()
