"""The aiortc/aioice internals rtckit relies on are still where rtckit expects them.

Each section belongs to one topic of :mod:`rtckit._aiortc`; a failure here means an aiortc
upgrade moved something: fix ``rtckit._aiortc`` before anything else.
"""

from __future__ import annotations

# --- sfu ---
import inspect
from typing import Any

import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.rtcdtlstransport import RTCDtlsTransport, RtpRouter
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters

from rtckit import _aiortc

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
    route = inspect.getsource(RtpRouter.route_rtp)
    assert "packet.ssrc" in route
    assert "packet.payload_type" in route
    assert "packet." not in route.replace("packet.ssrc", "").replace("packet.payload_type", "")
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
    from rtckit.errors import InternalsError

    with pytest.raises(InternalsError, match="negotiated codecs"):
        _aiortc.sfu_negotiated_codecs(object())  # type: ignore[arg-type]
