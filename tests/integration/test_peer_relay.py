"""Relay-only peer sessions through a real coturn on 127.0.0.1."""

from __future__ import annotations

import asyncio

from rtckit.ice import IceConfig, IceTransportPolicy
from rtckit.ice.candidates import CandidatePolicy
from rtckit.ice.turn import ice_server
from rtckit.peer import ConnectionStateChanged, PeerSession, SessionConfig
from rtckit.testing import DirectSignaller, require_executable
from rtckit.testing.coturn import run_loopback_coturn


async def test_relay_only_sessions_select_a_relay_pair_and_survive_replacement() -> None:
    require_executable("turnserver", hint="apt-get install coturn")
    async with run_loopback_coturn() as coturn:
        ice = IceConfig(
            servers=[ice_server([coturn.uri()], coturn.auth.issue("peer"))],
            transport_policy=IceTransportPolicy.RELAY,
        )
        # coturn listens on loopback here, so its relayed candidates are loopback addresses.
        config = SessionConfig(ice=ice, candidate_policy=CandidatePolicy(allow_loopback=True))
        sig_a, sig_b = DirectSignaller(), DirectSignaller()
        a = PeerSession(sig_a, polite=False, config=config, name="a")
        b = PeerSession(sig_b, polite=True, config=config, name="b")
        sig_a.target, sig_b.target = b, a
        async with a, b:
            a.create_data_channel("chat")
            await a.wait_connected(20)
            await b.wait_connected(20)
            pc = a.peer_connection
            assert pc is not None
            assert pc.localDescription is not None
            candidates = [
                line for line in pc.localDescription.sdp.splitlines() if "a=candidate" in line
            ]
            assert candidates
            assert all(" typ relay" in line for line in candidates), candidates
            stats = await a.stats()
            assert stats.candidate_pair is not None
            assert stats.candidate_pair.local_type == "relay"
            assert stats.candidate_pair.relayed
            # the relay policy applies to the replacement connection too
            await a.restart()
            async with asyncio.timeout(20):
                async for event in a.events():
                    if event == ConnectionStateChanged(state="connected", generation=1):
                        break
            again = await a.stats()
            assert again.candidate_pair is not None
            assert again.candidate_pair.local_type == "relay"
