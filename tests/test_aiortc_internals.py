"""Every aiortc/aioice internal rtckit relies on (rtckit._aiortc) is still where we expect.

These tests fail loudly when an aiortc or aioice upgrade moves something: read the failing
test's docstring and the matching function in rtckit._aiortc.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import inspect
from typing import Any

import aioice
import aioice.stun
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import av
import pytest
from aiortc import (
    RTCConfiguration,
    RTCIceGatherer,
    RTCIceServer,
    RTCIceTransport,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
)
from aiortc.mediastreams import VideoStreamTrack
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcdtlstransport import SRTP_AES128_CM_SHA1_80, RTCDtlsTransport, RtpRouter
from aiortc.rtcicetransport import connection_kwargs
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters
from aiortc.rtp import RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPsfbPacket
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from OpenSSL import SSL
from pylibsrtp import Policy, Session

import strangers
from rtckit import IceError, InternalsError, _aiortc
from rtckit._aiortc import on_keyframe_request
from rtckit.errors import ConfigurationError
from rtckit.ice import IceConfig
from rtckit.peer.connection import create_peer_connection
from rtckit.peer.stats import CandidatePairInfo

# --- versions ---


def test_installed_versions_are_supported() -> None:
    _aiortc.check_versions()


@pytest.mark.parametrize(
    ("aiortc_version", "aioice_version", "bad"),
    [
        ("1.17.0", "0.13.0", "aiortc 1.17.0"),
        ("1.13.2", "0.13.0", "aiortc 1.13.2"),
        ("2.0", "0.13.0", "aiortc 2.0"),
        ("1.16.0", "0.14.0", "aioice 0.14.0"),
        ("1.16.0", "0.9.1", "aioice 0.9.1"),
    ],
)
def test_unsupported_versions_raise(aiortc_version: str, aioice_version: str, bad: str) -> None:
    with pytest.raises(InternalsError, match=f"{bad} is installed"):
        _aiortc.check_versions(aiortc_version=aiortc_version, aioice_version=aioice_version)


@pytest.mark.parametrize(
    ("aiortc_version", "aioice_version"), [("1.14.0", "0.10.0"), ("1.16.2rc1", "0.13.0")]
)
def test_supported_versions_pass(aiortc_version: str, aioice_version: str) -> None:
    _aiortc.check_versions(aiortc_version=aiortc_version, aioice_version=aioice_version)


# --- ICE / TURN ---


def test_ice_connection_of_gatherer_and_transport() -> None:
    """Relies on RTCIceGatherer._connection / RTCIceTransport._connection."""
    gatherer = RTCIceGatherer(iceServers=[])
    transport = RTCIceTransport(gatherer)
    connection = _aiortc.ice_connection(gatherer)
    assert isinstance(connection, aioice.Connection)
    assert _aiortc.ice_connection(transport) is connection


def test_ice_connection_reports_a_moved_attribute() -> None:
    with pytest.raises(InternalsError, match=r"object._connection is not an aioice.Connection"):
        _aiortc.ice_connection(object())  # type: ignore[arg-type]


def test_force_relay_policy_sets_aioice_transport_policy() -> None:
    """Relies on aioice.Connection._transport_policy, read by gather_candidates."""
    gatherer = RTCIceGatherer(iceServers=[])
    connection = _aiortc.ice_connection(gatherer)
    before: object = connection._transport_policy
    assert before == aioice.TransportPolicy.ALL
    _aiortc.force_relay_policy(gatherer)
    after: object = connection._transport_policy
    assert after == aioice.TransportPolicy.RELAY
    assert "self._transport_policy == TransportPolicy.ALL" in inspect.getsource(
        aioice.Connection.gather_candidates
    )


async def test_force_relay_policy_gathers_nothing_without_turn() -> None:
    gatherer = RTCIceGatherer(iceServers=[])
    _aiortc.force_relay_policy(gatherer)
    await gatherer.gather()
    assert gatherer.getLocalCandidates() == []
    with pytest.raises(IceError, match="after gathering started"):
        _aiortc.force_relay_policy(gatherer)
    await RTCIceTransport(gatherer).stop()


def test_nominated_pairs_empty_before_connecting() -> None:
    """Relies on aioice.Connection._nominated (component -> CandidatePair)."""
    transport = RTCIceTransport(RTCIceGatherer(iceServers=[]))
    assert _aiortc.nominated_pairs(transport) == []
    assert isinstance(_aiortc.ice_connection(transport)._nominated, dict)
    pair_class = aioice.ice.CandidatePair
    local_candidate: object = vars(pair_class)["local_candidate"]
    assert isinstance(local_candidate, property)
    assert "remote_candidate" in inspect.signature(pair_class).parameters


def test_allocate_turn_relies_on_aioice_turn() -> None:
    """Relies on aioice.turn.create_turn_endpoint and aioice.stun.TransactionFailed."""
    from aioice import stun, turn

    parameters = inspect.signature(turn.create_turn_endpoint).parameters
    for name in ("protocol_factory", "server_addr", "username", "password", "ssl", "transport"):
        assert name in parameters, name
    assert issubclass(stun.TransactionFailed, stun.TransactionError)
    assert "response" in stun.TransactionFailed.__annotations__


def test_aiortc_gatherer_still_swallows_turn_errors() -> None:
    """aioice drops failed TURN allocations without a trace, which is why rtckit checks.

    If aiortc/aioice start reporting them, rtckit.ice.aiortc's probe can use that instead.
    """
    source = inspect.getsource(aioice.Connection.get_component_candidates)
    assert "if task.exception() is None" in source


def test_aiortc_configuration_fields() -> None:
    """rtckit.ice.aiortc uses aiortc's iceTransportPolicy where it exists (aiortc 1.16+)."""
    kwargs = connection_kwargs(
        [RTCIceServer(urls="turn:t:3478?transport=udp", username="u", credential="c")]
    )
    assert kwargs["turn_server"] == ("t", 3478)
    assert RTCConfiguration().iceServers is None  # None would mean aiortc's public STUN default


async def test_peer_connection_gatherers_are_reachable() -> None:
    """RtcKitPeerConnection finds gatherers through public attributes (sctp, transceivers)."""
    pc = create_peer_connection(IceConfig())
    pc.createDataChannel("probe")
    gatherers = pc._rtckit_gatherers()
    assert len(gatherers) == 1
    assert isinstance(gatherers[0], RTCIceGatherer)
    await pc.close()


# --- natlab / ice timeouts ---


class _Recorder:
    def __init__(self) -> None:
        self.sent = 0

    def send_stun(self, message: aioice.stun.Message, addr: tuple[str, int]) -> None:
        self.sent += 1


async def test_set_stun_retransmissions_bounds_a_transaction() -> None:
    previous = _aiortc.set_stun_retransmissions(1)
    try:
        assert previous == 6  # aioice's default; a change means our timing docs are stale
        assert _aiortc.stun_transaction_timeout() == pytest.approx(1.5)
        recorder = _Recorder()
        request = aioice.stun.Message(
            message_method=aioice.stun.Method.BINDING, message_class=aioice.stun.Class.REQUEST
        )
        transaction = aioice.stun.Transaction(request, ("192.0.2.1", 3478), recorder)
        async with asyncio.timeout(5):
            with pytest.raises(aioice.stun.TransactionTimeout):
                await transaction.run()
        assert recorder.sent == 2  # the request and one retransmission
    finally:
        assert _aiortc.set_stun_retransmissions(previous) == 1
    assert _aiortc.stun_transaction_timeout() == pytest.approx(63.5)
    with pytest.raises(ConfigurationError):
        _aiortc.set_stun_retransmissions(-1)


async def test_nominated_pairs_on_a_connected_pair() -> None:
    config = RTCConfiguration(iceServers=[])
    a, b = RTCPeerConnection(config), RTCPeerConnection(config)
    try:
        opened = asyncio.Event()
        channel = a.createDataChannel("x")
        channel.on("open", opened.set)
        async with asyncio.timeout(20):
            await a.setLocalDescription(await a.createOffer())
            await b.setRemoteDescription(a.localDescription)
            await b.setLocalDescription(await b.createAnswer())
            await a.setRemoteDescription(b.localDescription)
            await opened.wait()
        assert a.sctp is not None
        ((local, remote),) = _aiortc.nominated_pairs(a.sctp.transport.transport)
        assert local.type == "host"
        assert remote.type == "host"
    finally:
        await a.close()
        await b.close()


# --- sfu ---

_RECEIVER_MODULE: Any = aiortc.rtcrtpreceiver
_SENDER_MODULE: Any = aiortc.rtcrtpsender


def test_sfu_receiver_internals_exist() -> None:
    source = inspect.getsource(RTCRtpReceiver.receive)
    assert "decoder_worker" in source, "RTCRtpReceiver.receive no longer starts the decoder"
    assert "_register_rtp_receiver" in source
    assert hasattr(RTCRtpReceiver, "_RTCRtpReceiver__stop_decoder")
    assert "get_decoder(codec)" in inspect.getsource(aiortc.rtcrtpreceiver.decoder_worker)
    assert "input_q" in inspect.signature(aiortc.rtcrtpreceiver.decoder_worker).parameters
    assert "get_encoder(codec)" in inspect.getsource(RTCRtpSender._next_encoded_frame)
    assert callable(_RECEIVER_MODULE.get_decoder)
    assert callable(_SENDER_MODULE.get_encoder)


def test_sfu_transport_internals_exist() -> None:
    assert "self._handle_rtp_data(" in inspect.getsource(RTCDtlsTransport._recv_next)
    assert list(inspect.signature(RTCDtlsTransport._handle_rtp_data).parameters) == [
        "self",
        "data",
        "arrival_time_ms",
    ]
    assert "protect" in inspect.getsource(RTCDtlsTransport._send_rtp)
    assert hasattr(RTCDtlsTransport, "_unregister_rtp_receiver")
    assert "_send_rtcp(" in inspect.getsource(RTCRtpSender._run_rtcp)


async def test_sfu_take_over_and_probe_objects() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        transceiver = pc.addTransceiver("video", direction="sendrecv")
        # fresh objects carry every private attribute the SFU reads
        assert _aiortc.sfu_negotiated_codecs(transceiver) == []
        assert _aiortc.sfu_negotiated_header_extensions(transceiver) == []
        ssrc, rtx = _aiortc.sfu_sender_ssrcs(transceiver.sender)
        assert isinstance(ssrc, int)
        assert isinstance(rtx, int)
        assert not _aiortc.sfu_receiver_decoding(transceiver.receiver)
        assert not _aiortc.sfu_sender_encoding(transceiver.sender)
        started: list[RTCRtpReceiveParameters] = []
        assert _aiortc.sfu_take_over_receiver(transceiver.receiver, started.append)
        _aiortc.sfu_silence_sender_reports(transceiver.sender)
        transport = transceiver.receiver.transport
        assert callable(_aiortc.sfu_send_function(transport))

        async def on_rtp(data: bytes, arrival: int) -> None:
            return None

        _aiortc.sfu_install_rtp_tap(transport, transceiver.receiver, on_rtp)
        _aiortc.sfu_uninstall_rtp_tap(transport, transceiver.receiver)
        _aiortc.sfu_release_receiver(transceiver.receiver)
        _aiortc.sfu_watch_codecs(transceiver.receiver, lambda kind: None)
        _aiortc.sfu_watch_codecs(transceiver.sender, lambda kind: None)
    finally:
        await pc.close()


def test_sfu_codec_counters_wrap_the_factories() -> None:
    counters = _aiortc.sfu_codec_counters()
    assert _aiortc.sfu_codec_counters() is counters
    assert _RECEIVER_MODULE.get_decoder.__name__ == "counting_get_decoder"
    assert _SENDER_MODULE.get_encoder.__name__ == "counting_get_encoder"


def test_sfu_missing_internal_raises_internals_error() -> None:
    with pytest.raises(InternalsError, match="negotiated codecs"):
        _aiortc.sfu_negotiated_codecs(object())  # type: ignore[arg-type]


def test_stun_error_reads_aioice_error_responses() -> None:
    response = aioice.stun.Message(
        message_method=aioice.stun.Method.ALLOCATE, message_class=aioice.stun.Class.ERROR
    )
    response.attributes["ERROR-CODE"] = (401, "Unauthorized")
    assert _aiortc.stun_error(aioice.stun.TransactionFailed(response)) == (401, "Unauthorized")
    assert _aiortc.stun_error(TimeoutError()) is None
    assert _aiortc.is_stun_timeout(aioice.stun.TransactionTimeout())
    assert not _aiortc.is_stun_timeout(TimeoutError())


def test_turn_endpoint_relies_on_create_turn_endpoint() -> None:
    import aioice.turn

    parameters = inspect.signature(aioice.turn.create_turn_endpoint).parameters
    for name in ("protocol_factory", "server_addr", "username", "password", "ssl", "transport"):
        assert name in parameters, name


# --- peer sessions: rollback, ICE transports, nominated pair ---


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
        assert _aiortc.selected_pair(a) is None
        await _connect(a, b)
        pair = None
        for _ in range(200):
            pair = _aiortc.selected_pair(a)
            if pair is not None and a.connectionState == "connected":
                break
            await asyncio.sleep(0.02)
        assert pair is not None
        info = CandidatePairInfo.from_candidates(*pair)
        assert info.local_type == "host"
        assert not info.relayed
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


async def test_bound_gathering_caps_an_unreachable_stun_server() -> None:
    """A STUN server that never answers costs the bound, not aioice's 5 s."""
    import socket
    import time

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    silent.bind(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    pc = RTCPeerConnection(
        RTCConfiguration(
            iceServers=[RTCIceServer(urls=f"stun:127.0.0.1:{port}")],
            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
        )
    )
    try:
        pc.createDataChannel("x")
        assert _aiortc.bound_gathering(pc, 0.3) == 1
        assert _aiortc.bound_gathering(pc, 0.3) == 1  # re-binding replaces, not nests
        start = time.monotonic()
        await pc.setLocalDescription(await pc.createOffer())
        elapsed = time.monotonic() - start
        assert elapsed < 4.5, elapsed  # aioice alone waits 5 s here (bound: 0.3 s)
        assert "typ host" in pc.localDescription.sdp
        assert _aiortc.bound_gathering(pc, 0.3) == 0  # already gathered
    finally:
        await pc.close()
        silent.close()


# --- mcu ---


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


# --- peer: stable re-offers ---

# A browser-like session: header extension ids and payload types unlike aiortc's defaults
# (aiortc: sdes:mid 1, ssrc-audio-level 2, abs-send-time 3; opus 96, VP8 97, rtx 98).
_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
_TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
_REPAIRED_RID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
_BROWSER_IDS = {_LEVEL: 1, _ABS_SEND_TIME: 2, _MID: 4, _RID: 10, _REPAIRED_RID: 11}
_BROWSER_TYPES = {"audio": {96: 111}, "video": {97: 96, 98: 97}}


def _browser_like(sdp: str) -> str:
    """Rewrite an aiortc description's extmap ids and payload types to a browser's.

    Also adds transport-cc (which aiortc does not support) on id 3, aiortc's abs-send-time id.
    """
    import re

    out: list[str] = []
    types: dict[int, int] = {}

    def renumber(match: re.Match[str]) -> str:
        return str(types.get(int(match.group()), int(match.group())))

    for line in sdp.splitlines():
        if line.startswith("m="):
            types = _BROWSER_TYPES.get(line[2:].split()[0], {})
            head, formats = line.split(" UDP/TLS/RTP/SAVPF ") if "RTP/" in line else (line, "")
            if formats:
                line = f"{head} UDP/TLS/RTP/SAVPF " + re.sub(r"\d+", renumber, formats)
        elif line.startswith("a=extmap:"):
            uri = line.split()[1]
            line = f"a=extmap:{_BROWSER_IDS[uri]} {uri}"
            if uri == _ABS_SEND_TIME:
                out.append(line)
                line = f"a=extmap:3 {_TRANSPORT_CC}"
        elif line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")):
            line = re.sub(r"(?<=:)\d+", renumber, line, count=1)
            line = re.sub(r"(?<=apt=)\d+", renumber, line)
        out.append(line)
    return "\r\n".join(out) + "\r\n"


def _extmaps(sdp: str) -> list[dict[str, int]]:
    """Per m-line: header extension URI -> id."""
    sections = sdp.split("\r\nm=")[1:]
    result = []
    for section in sections:
        found = {}
        for line in section.splitlines():
            if line.startswith("a=extmap:"):
                ident, uri = line[len("a=extmap:") :].split()[:2]
                found[uri] = int(ident.split("/")[0])
        result.append(found)
    return result


def _rtpmaps(sdp: str) -> dict[int, str]:
    """Payload type -> "codec/clock" over the whole (bundled) description; fails on a clash."""
    import re

    result: dict[int, str] = {}
    for number, name in re.findall(r"a=rtpmap:(\d+) (\S+)", sdp):
        assert result.setdefault(int(number), name) == name, (number, name, result)
    return result


def _offerer() -> RTCPeerConnection:
    from aiortc.mediastreams import AudioStreamTrack

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    pc.addTrack(AudioStreamTrack())
    pc.addTrack(VideoStreamTrack())
    pc.createDataChannel("chat")
    return pc


def _only(pc: RTCPeerConnection) -> None:
    """Restrict every transceiver to opus and VP8 (+ rtx), as _BROWSER_TYPES expects."""
    from aiortc import RTCRtpSender

    for transceiver in pc.getTransceivers():
        codecs = RTCRtpSender.getCapabilities(transceiver.kind).codecs
        transceiver.setCodecPreferences(
            [c for c in codecs if c.mimeType.lower() in ("audio/opus", "video/vp8", "video/rtx")]
        )


async def test_aiortc_still_resets_extension_ids_on_reoffer() -> None:
    """The bug create_stable_offer works around: plain createOffer renumbers (JSEP says keep).

    If this fails, aiortc keeps negotiated ids itself: create_stable_offer may go.
    """
    from aiortc import RTCSessionDescription

    browser, python = _offerer(), RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        _only(browser)
        offer = await browser.createOffer()
        await python.setRemoteDescription(
            RTCSessionDescription(sdp=_browser_like(offer.sdp), type="offer")
        )
        await python.setLocalDescription(await python.createAnswer())
        assert _extmaps(python.localDescription.sdp)[0] == {_LEVEL: 1, _MID: 4}
        plain = await python.createOffer()
        assert _extmaps(plain.sdp)[0] == {_MID: 1, _LEVEL: 2}
        # and the internals create_stable_offer sets are what createOffer builds from
        for transceiver in python.getTransceivers():
            assert isinstance(transceiver._codecs, list)
            assert isinstance(transceiver._headerExtensions, list)
            assert callable(transceiver._get_mline_index)
    finally:
        await browser.close()
        await python.close()


async def test_stable_reoffer_after_a_browser_offer_keeps_ids_and_payload_types() -> None:
    """A browser offered first: aiortc's re-offer keeps its extension ids, mids and PTs."""
    from aiortc import RTCSessionDescription

    browser = _offerer()
    python = RTCPeerConnection(
        RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )
    try:
        _only(browser)
        offer = RTCSessionDescription(
            sdp=_browser_like((await browser.createOffer()).sdp), type="offer"
        )
        python.addTrack(VideoStreamTrack())  # associated with the browser's video m-line
        await python.setRemoteDescription(offer)
        await python.setLocalDescription(await python.createAnswer())
        answer_types = _rtpmaps(python.localDescription.sdp)
        assert answer_types == {111: "opus/48000/2", 96: "VP8/90000", 97: "rtx/90000"}
        # a new track makes a new m-line in the re-offer
        python.addTransceiver("audio", direction="sendonly")

        reoffer = await _aiortc.create_stable_offer(python)
        maps = _extmaps(reoffer.sdp)
        assert maps[0] == {_MID: 4, _LEVEL: 1}
        assert maps[1] == {_MID: 4, _ABS_SEND_TIME: 2, _RID: 10, _REPAIRED_RID: 11}
        # the new audio m-line uses the session's ids too (mid 4, level 1)
        assert maps[3] == {_MID: 4, _LEVEL: 1}
        types = _rtpmaps(reoffer.sdp)  # asserts one codec per payload type in the bundle
        assert {k: types[k] for k in answer_types} == answer_types
        assert "opus/48000/2" in types.values()
        # the new m-line's opus reuses the session's 111; its other codecs avoid 96 and 97
        new_section = reoffer.sdp.split("\r\nm=")[4]
        assert new_section.startswith("audio 9 UDP/TLS/RTP/SAVPF 111 ")
        mids = [line.split(":")[1] for line in reoffer.sdp.splitlines() if "a=mid:" in line]
        assert mids == ["0", "1", "2", "3"]
        await python.setLocalDescription(reoffer)
        assert sorted(str(t.mid) for t in python.getTransceivers()) == ["0", "1", "3"]
        for transceiver in python.getTransceivers():
            ids = {e.uri: e.id for e in transceiver._headerExtensions}
            assert ids[_MID] == 4
        # the browser side takes the re-offer
        await browser.setRemoteDescription(
            RTCSessionDescription(sdp=python.localDescription.sdp, type="offer")
        )
    finally:
        await browser.close()
        await python.close()


async def test_stable_reoffer_after_an_answer_with_other_ids_keeps_them() -> None:
    """aiortc offered first; the answer numbered the extensions its own way: kept on re-offer."""
    from aiortc import RTCSessionDescription

    python, remote = _offerer(), RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        _only(python)
        await python.setLocalDescription(await python.createOffer())
        await remote.setRemoteDescription(python.localDescription)
        answer = await remote.createAnswer()
        crafted = _browser_like(answer.sdp)
        assert _extmaps(crafted)[0] == {_LEVEL: 1, _MID: 4}
        await python.setRemoteDescription(RTCSessionDescription(sdp=crafted, type="answer"))

        first = await _aiortc.create_stable_offer(python)
        maps = _extmaps(first.sdp)
        assert maps[0] == {_MID: 4, _LEVEL: 1}
        assert maps[1] == {_MID: 4, _ABS_SEND_TIME: 2, _RID: 10, _REPAIRED_RID: 11}
        assert _rtpmaps(first.sdp) == {111: "opus/48000/2", 96: "VP8/90000", 97: "rtx/90000"}
        # a second round (re-offer, answer, re-offer) is stable too
        await python.setLocalDescription(first)
        await python.setRemoteDescription(RTCSessionDescription(sdp=crafted, type="answer"))
        second = await _aiortc.create_stable_offer(python)
        assert _extmaps(second.sdp) == maps
        assert _rtpmaps(second.sdp) == _rtpmaps(first.sdp)
    finally:
        await python.close()
        await remote.close()


async def test_stable_first_offer_numbers_extensions_as_a_browser_does() -> None:
    """Nothing negotiated yet: ids a browser's own offer uses (a glare must not collide)."""
    python = _offerer()
    try:
        offer = await _aiortc.create_stable_offer(python)
        assert _extmaps(offer.sdp) == [
            {_MID: 4, _LEVEL: 1},
            {_MID: 4, _ABS_SEND_TIME: 2, _RID: 10, _REPAIRED_RID: 11},
            {},
        ]
        await python.setLocalDescription(offer)
        for transceiver in python.getTransceivers():
            assert {e.uri: e.id for e in transceiver._headerExtensions}[_MID] == 4
    finally:
        await python.close()


# --- sfu rooms: republish on a reused receiver ---


async def test_sfu_take_over_again_after_receive_ran_without_an_owner() -> None:
    """aiortc may call ``receive`` for a renegotiated m-line before the new owner takes over."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        transceiver = pc.addTransceiver("video", direction="sendrecv")
        receiver = transceiver.receiver
        first: list[RTCRtpReceiveParameters] = []
        assert _aiortc.sfu_take_over_receiver(receiver, first.append)
        parameters = RTCRtpReceiveParameters(codecs=[], headerExtensions=[])
        await receiver.receive(parameters)  # what aiortc's __connect does after negotiation
        assert first == [parameters]
        _aiortc.sfu_release_receiver(receiver)  # unpublished
        await receiver.receive(parameters)  # the republish negotiation, before the take-over
        assert first == [parameters]  # the old owner is not called again
        second: list[RTCRtpReceiveParameters] = []
        assert _aiortc.sfu_take_over_receiver(receiver, second.append)
        assert second == [parameters]  # started at once: aiortc will not call receive again
        _aiortc.sfu_release_receiver(receiver)
    finally:
        await pc.close()


# --- peer: trickled candidates on bundled transports ---


async def _offered_without_candidates() -> tuple[RTCPeerConnection, RTCPeerConnection]:
    """A remote offer (video first, then data) applied without candidates, as a browser's."""
    from aiortc import RTCSessionDescription

    remote, local = _pc(), _pc()
    remote.addTransceiver("video")
    remote.createDataChannel("chat")
    await remote.setLocalDescription(await remote.createOffer())
    sdp = "\r\n".join(
        line
        for line in remote.localDescription.sdp.split("\r\n")
        if not line.startswith(("a=candidate:", "a=end-of-candidates"))
    )
    local.createDataChannel("hb", negotiated=True, id=1000)  # as a PeerSession does
    _aiortc.mark_sctp_bundled(local)
    await local.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
    return remote, local


def _host(port: int, *, mid: str | None, index: int | None) -> Any:
    from aiortc.sdp import candidate_from_sdp

    candidate = candidate_from_sdp(f"1 1 udp 2130706431 192.0.2.7 {port} typ host")
    candidate.sdpMid, candidate.sdpMLineIndex = mid, index
    return candidate


async def test_aiortc_still_drops_trickled_candidates_of_bundled_media() -> None:
    """Why add_trickled_candidate exists: aiortc's addIceCandidate skips bundled m-lines.

    If this fails, aiortc passes such candidates on itself and the work-around is redundant
    (still harmless: aioice ignores a candidate it has already).
    """
    remote, local = await _offered_without_candidates()
    try:
        ice = local.sctp.transport.transport if local.sctp else None
        assert ice is not None
        for index, transceiver in enumerate(local.getTransceivers()):
            await local.addIceCandidate(_host(4000 + index, mid=transceiver.mid, index=index))
        assert ice.getRemoteCandidates() == []
    finally:
        await remote.close()
        await local.close()


async def test_add_trickled_candidate_reaches_the_bundled_ice_transport() -> None:
    remote, local = await _offered_without_candidates()
    try:
        assert local.sctp is not None
        ice = local.sctp.transport.transport
        [video] = local.getTransceivers()
        assert video.receiver.transport.transport is ice  # one bundled transport
        assert video.mid is not None
        await _aiortc.add_trickled_candidate(local, _host(4000, mid=video.mid, index=0))
        await _aiortc.add_trickled_candidate(local, _host(4001, mid=None, index=1))  # by index
        await _aiortc.add_trickled_candidate(local, _host(4000, mid=video.mid, index=0))
        assert sorted(c.port for c in ice.getRemoteCandidates()) == [4000, 4001]
        assert local.remoteDescription is not None
        assert "192.0.2.7 4001" in local.remoteDescription.sdp  # aiortc's bookkeeping too
        with pytest.raises(ValueError, match="unknown m-line"):
            await _aiortc.add_trickled_candidate(local, _host(4002, mid="nope", index=None))
    finally:
        await remote.close()
        await local.close()


# --- RTP routing (RtpRouting) ---


def _packet(ssrc: int, payload_type: int, *, mid: str | None = None, rid: str | None = None) -> Any:
    from aiortc.rtp import RtpPacket

    packet = RtpPacket(payload_type=payload_type, ssrc=ssrc)
    packet.extensions.mid = mid
    packet.extensions.rtp_stream_id = rid
    return packet


def _video_parameters(mid: str, ssrc: int, rtx_ssrc: int) -> RTCRtpReceiveParameters:
    from aiortc import RTCRtpCodecParameters
    from aiortc.rtcrtpparameters import RTCRtpDecodingParameters, RTCRtpRtxParameters

    return RTCRtpReceiveParameters(
        codecs=[
            RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97),
            RTCRtpCodecParameters(
                mimeType="video/rtx", clockRate=90000, payloadType=98, parameters={"apt": 97}
            ),
        ],
        muxId=mid,
        encodings=[
            RTCRtpDecodingParameters(
                ssrc=ssrc, payloadType=97, rtx=RTCRtpRtxParameters(ssrc=rtx_ssrc)
            )
        ],
    )


def test_aiortc_router_still_drops_rtx_of_two_video_receivers() -> None:
    """The upstream limitation ``RtpRouting`` works around (aiortc 1.14-1.16).

    When this fails, aiortc routes by MID or registers RTX SSRCs itself: check whether
    ``rtckit._aiortc.install_rtp_routing`` is still needed.
    """
    router = RtpRouter()
    first, second = object(), object()
    for receiver, mid, ssrc in ((first, "0", 1000), (second, "1", 2000)):
        parameters = _video_parameters(mid, ssrc, ssrc + 1)
        transport: Any = type("T", (), {})()
        transport._rtp_router = router
        transport._rtp_header_extensions_map = aiortc.rtp.HeaderExtensionsMap()
        RTCDtlsTransport._register_rtp_receiver(transport, receiver, parameters)  # type: ignore[arg-type]
    assert router.route_rtp(_packet(2000, 97)) is second
    assert router.route_rtp(_packet(2001, 98)) is None, "aiortc now routes RTX SSRCs"
    assert router.route_rtp(_packet(2001, 98, mid="1")) is None, "aiortc now routes by MID"


async def test_rtp_routing_internals_exist() -> None:
    """What ``rtckit._aiortc.RtpRouting`` and its installation rely on."""
    router = RtpRouter()
    for name in ("receivers", "senders", "mid_table", "ssrc_table", "payload_type_table"):
        assert hasattr(router, name), name
    assert "self._rtp_router.route_rtp(packet)" in inspect.getsource(
        RTCDtlsTransport._handle_rtp_data
    )
    assert "self._rtp_header_extensions_map" in inspect.getsource(RTCDtlsTransport._handle_rtp_data)
    assert list(inspect.signature(RTCDtlsTransport._register_rtp_receiver).parameters) == [
        "self",
        "receiver",
        "parameters",
    ]
    assert "self.__rtx_ssrc.get(packet.ssrc)" in inspect.getsource(
        RTCRtpReceiver._handle_rtp_packet
    )
    extensions = aiortc.rtp.HeaderExtensions()
    for name in ("mid", "rtp_stream_id", "repaired_rtp_stream_id"):
        assert hasattr(extensions, name), name
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        assert callable(getattr(pc, "_RTCPeerConnection__createDtlsTransport", None))
        receiver = pc.addTransceiver("video").receiver
        assert receiver._RTCRtpReceiver__rtx_ssrc == {}  # type: ignore[attr-defined]
    finally:
        await pc.close()


def test_rtp_routing_by_ssrc_mid_rid_and_payload_type() -> None:
    router = _aiortc.RtpRouting()
    first: Any = object()
    second: Any = object()
    router.register_receiver(first, ssrcs=[1000], payload_types=[97, 98], mid="0")
    router.register_parameters(first, _video_parameters("0", 1000, 1001))
    router.register_receiver(second, ssrcs=[], payload_types=[97, 98], mid="1")
    # by SSRC, the RTX SSRC of the remote description included; the payload type must fit
    assert router.route_rtp(_packet(1000, 97)) is first
    assert router.route_rtp(_packet(1001, 98)) is first
    assert router.route_rtp(_packet(1000, 111)) is None
    # unknown SSRC: by MID, then learned
    assert router.route_rtp(_packet(3000, 97, mid="1")) is second
    assert router.route_rtp(_packet(3000, 97)) is second
    # an unknown MID is not guessed from the payload type (shared here anyway)
    assert router.route_rtp(_packet(4000, 97, mid="9")) is None
    assert router.route_rtp(_packet(4000, 97)) is None
    assert 4000 not in router.ssrc_table
    # by RID when no MID is sent
    third: Any = object()
    router.register_receiver(third, ssrcs=[], payload_types=[96])
    router.register_rids(third, ["hi"])
    router.register_rids(second, ["lo"])
    assert router.route_rtp(_packet(5000, 97, rid="lo")) is second
    # by payload type when it names one receiver only (as aiortc does)
    assert router.route_rtp(_packet(6000, 96)) is third
    router.unregister_receiver(second)
    assert 3000 not in router.ssrc_table
    assert router.route_rtp(_packet(3000, 97, mid="1")) is None
    assert all(second not in receivers for receivers in router.rid_table.values())


def test_rtp_routing_forgets_old_learned_ssrcs() -> None:
    """A remote sending a valid MID with ever new SSRCs grows the tables to a bound only."""
    router = _aiortc.RtpRouting()
    receiver: Any = object()
    router.register_receiver(receiver, ssrcs=[1000], payload_types=[97], mid="0")
    for ssrc in range(5000, 5100):
        assert router.route_rtp(_packet(ssrc, 97, mid="0")) is receiver
    assert len(router.ssrc_table) == 33  # the signaled SSRC and the last 32 learned
    assert router.ssrc_table[1000] is receiver
    assert router.ssrc_table[5099] is receiver
    assert 5000 not in router.ssrc_table
    assert len(router.media_ssrcs[receiver]) == 32


async def test_rtp_routing_learns_an_rtx_ssrc_by_mid_for_aiortc_to_unwrap() -> None:
    """A remote description without SSRCs: the RTX SSRC is learned from a packet's MID."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        receivers: list[Any] = [pc.addTransceiver("video").receiver for _ in range(2)]
        router = _aiortc.RtpRouting()
        for receiver, mid in zip(receivers, ("0", "1"), strict=True):
            parameters = _video_parameters(mid, 0, 0)
            parameters.encodings = []
            router.register_receiver(receiver, ssrcs=[], payload_types=[97, 98], mid=mid)
            router.register_parameters(receiver, parameters)
        assert router.route_rtp(_packet(7000, 97, mid="1")) is receivers[1]
        assert router.route_rtp(_packet(7001, 98, mid="1")) is receivers[1]
        assert router.route_rtp(_packet(7001, 98)) is receivers[1]
        assert receivers[1]._RTCRtpReceiver__rtx_ssrc == {7001: 7000}
        assert receivers[0]._RTCRtpReceiver__rtx_ssrc == {}
    finally:
        await pc.close()


async def test_install_rtp_routing_on_every_transport_now_and_later() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.BALANCED))
    try:
        audio = pc.addTransceiver("audio")
        _aiortc.install_rtp_routing(pc)
        _aiortc.install_rtp_routing(pc)  # idempotent
        video = pc.addTransceiver("video")  # BALANCED: a transport of its own
        assert video.receiver.transport is not audio.receiver.transport
        for transceiver in (audio, video):
            transport: Any = transceiver.receiver.transport
            assert isinstance(transport._rtp_router, _aiortc.RtpRouting)
            router = transport._rtp_router
            transport._register_rtp_receiver(
                transceiver.receiver, _video_parameters("0", 1000, 1001)
            )
            assert router.ssrc_table == {1000: transceiver.receiver, 1001: transceiver.receiver}
        assert _aiortc.install_rtp_routing_on_transport(video.receiver.transport) is (
            video.receiver.transport._rtp_router
        )
    finally:
        await pc.close()


# --- DTLS: peers with an RSA certificate ---


def _rsa_dtls_server_context() -> SSL.Context:
    """A DTLS server as GStreamer's webrtcbin sets it up: RSA certificate, OpenSSL's suites."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "webrtcbin")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    context = SSL.Context(SSL.DTLS_METHOD)
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *_: True)
    context.use_certificate(cert)
    context.use_privatekey(key)
    context.set_cipher_list(b"ALL:!ADH:!LOW:!EXP:!MD5:@STRENGTH")  # gst-plugins-bad's dtls
    context.set_tlsext_use_srtp(b"SRTP_AES128_CM_SHA1_80")
    return context


def _client_context(pc: RTCPeerConnection) -> SSL.Context:
    """The context *pc*'s DTLS transport would open as the client (read through privates)."""
    transport = pc.addTransceiver("video").sender.transport
    certificate = transport._RTCDtlsTransport__local_certificate  # type: ignore[attr-defined]
    context = certificate._create_ssl_context(srtp_profiles=[SRTP_AES128_CM_SHA1_80])
    assert isinstance(context, SSL.Context)
    return context


def _dtls_handshake(client_context: SSL.Context, server_context: SSL.Context) -> str:
    """Run a DTLS handshake in memory; return the cipher the two sides agreed on."""
    client, server = SSL.Connection(client_context), SSL.Connection(server_context)
    client.set_connect_state()
    server.set_accept_state()
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, this, other in (("client", client, server), ("server", server, client)):
            try:
                this.do_handshake()
                done[name] = True
            except SSL.WantReadError:
                pass
            with contextlib.suppress(SSL.WantReadError):
                while data := this.bio_read(65536):
                    other.bio_write(data)
        if all(done.values()):
            cipher = client.get_cipher_name()
            assert cipher == server.get_cipher_name()
            return str(cipher)
    raise AssertionError(f"the DTLS handshake did not finish: {done}")


async def test_aiortc_client_still_offers_no_rsa_suite() -> None:
    """Why widen_dtls_ciphers exists: a stock aiortc DTLS client cannot talk to an RSA server.

    If this fails, aiortc offers RSA suites itself and the work-around can go.
    """
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        with pytest.raises(SSL.Error, match="no shared cipher"):
            _dtls_handshake(_client_context(pc), _rsa_dtls_server_context())
    finally:
        await pc.close()


async def test_widened_client_handshakes_with_an_rsa_server() -> None:
    """Relies on RTCPeerConnection.__certificates, RTCCertificate._key/_cert/_create_ssl_context.

    The fingerprint is unchanged (same certificate), and aiortc's DTLS transports take the
    widened certificate.
    """
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        before = [f.value for f in pc._RTCPeerConnection__certificates[0].getFingerprints()]  # type: ignore[attr-defined]
        _aiortc.widen_dtls_ciphers(pc)
        _aiortc.widen_dtls_ciphers(pc)  # idempotent
        after = [f.value for f in pc._RTCPeerConnection__certificates[0].getFingerprints()]  # type: ignore[attr-defined]
        assert after == before
        cipher = _dtls_handshake(_client_context(pc), _rsa_dtls_server_context())
        assert cipher == "ECDHE-RSA-AES128-GCM-SHA256"
        with pytest.raises(ValueError, match="before the connection has a transport"):
            _aiortc.widen_dtls_ciphers(pc)
    finally:
        await pc.close()


async def test_widened_server_still_serves_ecdsa() -> None:
    """As the DTLS server, aiortc's ECDSA certificate picks an ECDSA suite, as before."""
    server_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        _aiortc.widen_dtls_ciphers(server_pc)
        cipher = _dtls_handshake(_client_context(client_pc), _client_context(server_pc))
        assert cipher == "ECDHE-ECDSA-AES128-GCM-SHA256"
    finally:
        await server_pc.close()
        await client_pc.close()


async def test_sessions_and_rtckit_connections_widen_their_ciphers() -> None:
    pc = create_peer_connection(IceConfig())
    try:
        assert _dtls_handshake(_client_context(pc), _rsa_dtls_server_context())
    finally:
        await pc.close()


def test_sdp_parser_names() -> None:
    """``aiortc.sdp`` (undocumented) still has the parser and candidate reader rtckit uses."""
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
        "a=mid:0\r\na=sctp-port:5000\r\n"
    )
    assert [m.kind for m in _aiortc.SdpDescription.parse(sdp).media] == ["application"]
    candidate = _aiortc.candidate_from_sdp("1 1 udp 2130706431 127.0.0.1 5000 typ host")
    assert (candidate.ip, candidate.port, candidate.type) == ("127.0.0.1", 5000, "host")


# --- srtp ---


def _srtp_pair() -> tuple[Session, Session]:
    """An outgoing and an incoming pylibsrtp session with one key, as aiortc makes them."""
    key = bytes(range(30))
    sessions = []
    for ssrc_type in (Policy.SSRC_ANY_OUTBOUND, Policy.SSRC_ANY_INBOUND):
        policy = Policy(
            key=key, ssrc_type=ssrc_type, srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80
        )
        sessions.append(Session(policy))
    return sessions[0], sessions[1]


def _rtp(size: int, sequence_number: int = 1) -> bytes:
    """An RTP packet of *size* bytes (payload type 96, SSRC 1234)."""
    header = bytes([0x80, 96]) + sequence_number.to_bytes(2, "big") + bytes(4)
    return header + (1234).to_bytes(4, "big") + bytes(size - 12)


def test_pylibsrtp_still_refuses_rtp_packets_over_1356_bytes() -> None:
    """Why widen_srtp exists: pylibsrtp's 1500-byte buffer less its 144-byte trailer reserve.

    GStreamer's payloaders send RTP packets of up to 1400 bytes. If this fails, pylibsrtp
    takes them itself and the work-around can go.
    """
    tx, _rx = _srtp_pair()
    tx.protect(_rtp(1356))
    with pytest.raises(ValueError, match="packet is too long"):
        tx.protect(_rtp(1357))


def test_widen_srtp_protects_full_size_packets() -> None:
    """Relies on pylibsrtp.Session._cdata and ._buffer; the SRTP made is a stock session's."""
    tx, rx = _srtp_pair()
    _aiortc.widen_srtp(tx)
    _aiortc.widen_srtp(tx)  # idempotent
    _aiortc.widen_srtp(rx)  # (a receiver takes 1500-byte datagrams: 1904 is for this test)
    for number, size in enumerate((100, 1357, 1400, 1904), start=1):
        packet = _rtp(size, number)
        assert rx.unprotect(tx.protect(packet)) == packet
    with pytest.raises(ValueError, match="packet is too long"):
        tx.protect(_rtp(1905, 9))
    with pytest.raises(InternalsError, match="_cdata"):
        _aiortc.widen_srtp(object())  # type: ignore[arg-type]


async def test_sfu_senders_send_full_size_rtp_packets() -> None:
    """The SFU's two send paths (aiortc's ``_send_rtp`` and the fast path) take a 1400-byte RTP
    packet, as webrtcbin sends them: the transport's outgoing SRTP session is widened when it
    is keyed (the send function made before the DTLS handshake) or at once (after it)."""
    a, b = _pc(), _pc()
    try:
        a.addTransceiver("video", direction="sendonly")
        await a.setLocalDescription(await a.createOffer())
        transport = a.getTransceivers()[0].sender.transport
        send = _aiortc.sfu_send_function(transport)  # before the handshake
        received: list[bytes] = []

        async def capture(data: bytes, arrival_time_ms: int) -> None:
            received.append(data)

        await b.setRemoteDescription(a.localDescription)
        b.getTransceivers()[0].receiver.transport._handle_rtp_data = capture  # type: ignore[method-assign]
        await b.setLocalDescription(await b.createAnswer())
        async with asyncio.timeout(20):
            await a.setRemoteDescription(b.localDescription)
            while transport.state != "connected":  # noqa: ASYNC110 - aiortc's state, no event
                await asyncio.sleep(0.02)
        await send(_rtp(1400, 1))
        fast = _aiortc.sfu_fast_rtp_sender(transport)  # after the handshake
        assert fast(_rtp(1400, 2))
        async with asyncio.timeout(10):
            while len(received) < 2:  # noqa: ASYNC110 - filled by aiortc's receive task
                await asyncio.sleep(0.02)
        assert received == [_rtp(1400, 1), _rtp(1400, 2)]
    finally:
        await a.close()
        await b.close()


# --- receive ---


class _ChannelPair:
    """Two connected aiortc peers and a data channel from a to b; with *guard*, b is guarded
    before it has a transport and a after (both paths of ``guard_receive``)."""

    def __init__(self, *, guard: bool) -> None:
        self.a, self.b = _pc(), _pc()
        self.guard = guard
        self.received: asyncio.Queue[str] = asyncio.Queue()

    async def __aenter__(self) -> _ChannelPair:
        if self.guard:
            _aiortc.guard_receive(self.b)
        self.channel = self.a.createDataChannel("x")
        if self.guard:
            _aiortc.guard_receive(self.a)
            _aiortc.guard_receive(self.a)  # idempotent
        opened = asyncio.Event()
        self.channel.on("open", opened.set)

        @self.b.on("datachannel")
        def on_channel(channel: Any) -> None:
            channel.on("message", self.received.put_nowait)

        await _connect(self.a, self.b)
        async with asyncio.timeout(20):
            await opened.wait()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.a.close()
        await self.b.close()

    async def echo(self, text: str) -> None:
        """*text* sent by a arrives at b."""
        self.channel.send(text)
        async with asyncio.timeout(10):
            assert await self.received.get() == text


@pytest.mark.parametrize("shape", ["empty", "srtp-1601"])
async def test_aiortc_receive_loop_still_ends_at_one_stranger_datagram(shape: str) -> None:
    """Why guard_receive exists: one empty datagram (aiortc reads its first byte) or one
    over 1500 bytes starting with 128-191 (pylibsrtp's ``ValueError``, uncaught) from any
    address closes an unguarded aiortc connection for good. If this fails, aiortc catches
    them itself and the guard can go."""
    async with _ChannelPair(guard=False) as pair:
        strangers.send_from_stranger(pair.b, [strangers.DROPPED[shape]])
        async with asyncio.timeout(10):
            while pair.b.connectionState != "closed":  # noqa: ASYNC110 - aiortc's state
                await asyncio.sleep(0.02)
        assert pair.b.sctp is not None
        assert pair.b.sctp.transport.state == "closed"


async def test_guard_receive_drops_hostile_datagrams_from_the_peer_address() -> None:
    """Relies on ``RTCIceTransport._recv``, ``RTCDtlsTransport._rx_srtp`` (its ``unprotect``
    and ``unprotect_rtcp``) and ``RTCPeerConnection.__createDtlsTransport``. The datagrams
    come from a's own socket (a forged source address looks the same), so no address filter
    would stop them: both peers stay connected and the channel still carries messages."""
    async with _ChannelPair(guard=True) as pair:
        await pair.echo("before")
        with strangers.own_socket(pair.a) as forged:
            await strangers.send_hostile(pair.b, via=forged)
        await strangers.send_hostile(pair.a)
        await pair.echo("after")
        strangers.assert_connected(pair.a)


async def test_guard_receive_reports_moved_internals() -> None:
    with pytest.raises(InternalsError, match="transport"):
        _aiortc.guard_transport_receive(object())  # type: ignore[arg-type]
    pc = _pc()
    try:
        pc.createDataChannel("x")
        assert pc.sctp is not None
        transport = pc.sctp.transport
        assert callable(transport.transport._recv)
        rx_srtp: object = transport._rx_srtp
        assert rx_srtp is None  # set by the handshake
        del transport.transport._recv
        with pytest.raises(InternalsError, match="_recv"):
            _aiortc.guard_transport_receive(transport)
    finally:
        await pc.close()


# --- encoded frames before the decoder (rtckit._aiortc.media) ---


async def _sending_pair(
    *, decode: bool
) -> tuple[RTCPeerConnection, RTCPeerConnection, list[tuple[str, bytes, int]]]:
    """*a* sends a test pattern to *b*, whose receiver is tapped before it starts."""
    from rtckit.peer.media import PatternConfig, TestPatternTrack

    a, b = _pc(), _pc()
    a.addTransceiver(TestPatternTrack(PatternConfig(width=160, height=120, fps=15)), "sendonly")
    frames: list[tuple[str, bytes, int]] = []
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    (transceiver,) = b.getTransceivers()
    _aiortc.tap_encoded_frames(
        transceiver.receiver,
        lambda codec, data, ts: frames.append((codec.mimeType, data, ts)),
        decode=decode,
    )
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    return a, b, frames


async def test_tap_encoded_frames_sees_frames_before_the_decoder() -> None:
    """RTCRtpReceiver.__decoder_queue still receives (codec, JitterFrame) and is the queue
    receive() hands to the decoder thread: the tap sees whole VP8 frames, a keyframe first,
    RTP timestamps from 0; without decoding, no decoder is created for the receiver."""
    counters = _aiortc.sfu_codec_counters()
    decoders = counters.decoders
    a, b, frames = await _sending_pair(decode=False)
    try:
        async with asyncio.timeout(20):
            while len(frames) < 10:  # noqa: ASYNC110 (the tap is a plain callback: no event)
                await asyncio.sleep(0.05)
        assert {mime for mime, _, _ in frames} == {"video/VP8"}
        assert frames[0][1][0] & 1 == 0  # a VP8 key frame (RFC 6386 section 9.1)
        assert frames[0][2] == 0
        timestamps = [ts for _, _, ts in frames]
        assert timestamps == sorted(timestamps)
        assert counters.decoders == decoders
        (transceiver,) = b.getTransceivers()
        assert _aiortc.sfu_receiver_decoding(transceiver.receiver)  # the thread idles
        with pytest.raises(RuntimeError, match="before the receiver starts"):
            _aiortc.tap_encoded_frames(transceiver.receiver, lambda *args: None)
    finally:
        await a.close()
        await b.close()


async def test_tap_encoded_frames_keeps_decoding_when_asked() -> None:
    a, b, frames = await _sending_pair(decode=True)
    try:
        (transceiver,) = b.getTransceivers()
        async with asyncio.timeout(20):
            frame = await transceiver.receiver.track.recv()
        assert isinstance(frame, av.VideoFrame)
        assert frame.width == 160
        assert frames
    finally:
        await a.close()
        await b.close()


async def test_tap_encoded_frames_reports_a_moved_queue() -> None:
    pc = _pc()
    try:
        receiver = pc.addTransceiver("audio", "recvonly").receiver
        receiver._RTCRtpReceiver__decoder_queue = None  # type: ignore[attr-defined]
        with pytest.raises(InternalsError, match="decoder_queue"):
            _aiortc.tap_encoded_frames(receiver, lambda *args: None)
        del receiver._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]
        with pytest.raises(InternalsError, match="decoder_queue"):
            _aiortc.tap_encoded_frames(receiver, lambda *args: None)
    finally:
        await pc.close()


def test_aiortc_still_does_not_negotiate_rid_extensions() -> None:
    """aiortc's own extension list (a fresh interpreter) has no RID extensions: when it does,
    rtckit._aiortc.simulcast.negotiate_rid_extensions can go."""
    import subprocess
    import sys

    script = "import aiortc.codecs as c; print([e.uri for e in c.HEADER_EXTENSIONS['video']])"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "sdes:mid" in out
    assert "rtp-stream-id" not in out


async def test_negotiate_rid_extensions_puts_them_in_offers_and_answers() -> None:
    import aiortc.codecs
    import aiortc.rtcpeerconnection

    from rtckit._aiortc import RID_EXTENSION_URIS, negotiate_rid_extensions

    negotiate_rid_extensions()
    negotiate_rid_extensions()  # idempotent
    assert getattr(aiortc.rtcpeerconnection, "HEADER_EXTENSIONS") is aiortc.codecs.HEADER_EXTENSIONS  # noqa: B009
    video = [e.uri for e in aiortc.codecs.HEADER_EXTENSIONS["video"]]
    assert [u for u in video if u in RID_EXTENSION_URIS] == list(RID_EXTENSION_URIS)
    offerer, answerer = RTCPeerConnection(), RTCPeerConnection()
    try:
        offerer.addTransceiver("video", direction="sendonly")
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        answer = await answerer.createAnswer()
        for uri, x_id in RID_EXTENSION_URIS.items():
            assert f"a=extmap:{x_id} {uri}" in offerer.localDescription.sdp
            assert f"a=extmap:{x_id} {uri}" in answer.sdp
    finally:
        await offerer.close()
        await answerer.close()


def test_negotiate_rid_extensions_reports_a_moved_table(monkeypatch: pytest.MonkeyPatch) -> None:
    import aiortc.codecs

    from rtckit._aiortc import negotiate_rid_extensions
    from rtckit.errors import InternalsError

    monkeypatch.setattr(aiortc.codecs, "HEADER_EXTENSIONS", {"video": []})
    with pytest.raises(InternalsError, match="HEADER_EXTENSIONS"):
        negotiate_rid_extensions()


async def test_aiortc_video_jitter_buffer_still_waits_for_a_hole() -> None:
    """Why the SFU skips sequence numbers after a loss it cannot repair (AIORTC_JITTER_SKIP).

    aiortc's video receiver keeps 512 packets and hands out frames in sequence order only: one
    packet missing for good stalls every frame after it, without a PLI, until a packet 512
    numbers later. A packet AIORTC_JITTER_SKIP ahead empties it and asks for a keyframe.
    When aiortc repairs this, the skip (and this test) can go.
    """
    from aiortc.jitterbuffer import JitterBuffer
    from aiortc.rtp import RtpPacket

    pc = RTCPeerConnection()
    try:
        receiver = pc.addTransceiver("video", direction="recvonly").receiver
        capacity = receiver._RTCRtpReceiver__jitter_buffer.capacity  # type: ignore[attr-defined]
    finally:
        await pc.close()
    assert 2 * capacity <= _aiortc.AIORTC_JITTER_SKIP

    def packet(seq: int, ts: int) -> RtpPacket:
        p = RtpPacket(payload_type=96, sequence_number=seq & 0xFFFF, timestamp=ts)
        p._data = b"x"  # type: ignore[attr-defined]
        return p

    buffer = JitterBuffer(capacity=capacity, is_video=True)
    frames = [buffer.add(packet(seq, seq // 2))[1] for seq in range(10)]
    assert any(frames)
    # 10 is lost for good: nothing comes out, and no PLI, for 500 packets
    out = [buffer.add(packet(seq, seq // 2)) for seq in range(11, 11 + capacity - 12)]
    assert not any(frame for _, frame in out)
    assert not any(pli for pli, _ in out)
    # the SFU's restart: a keyframe AIORTC_JITTER_SKIP further on
    start = 11 + capacity - 12 + _aiortc.AIORTC_JITTER_SKIP
    pli, _ = buffer.add(packet(start, 10_000))
    assert pli
    assert buffer.add(packet(start + 1, 10_001))[1] is not None  # frames flow again
