"""Checks that the aiortc/aioice internals rtckit relies on are still where rtckit expects.

Each helper appends its own section.
"""

from __future__ import annotations

import asyncio

import aioice.stun
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from rtckit import _aiortc
from rtckit.errors import ConfigurationError

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


async def test_selected_candidate_pair_on_loopback_pair() -> None:
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
        pair = _aiortc.selected_candidate_pair(a.sctp.transport.transport)
        assert pair is not None
        local, remote = pair
        assert local.type == "host"
        assert remote.type == "host"
    finally:
        await a.close()
        await b.close()
