"""rtckit's WHIP client gathers with the TURN server and credentials a WHIP endpoint hands out
on ``OPTIONS`` (a real coturn on 127.0.0.1)."""

from __future__ import annotations

from rtckit.peer.media import TestPatternTrack
from rtckit.testing import require_executable
from rtckit.testing.coturn import run_loopback_coturn
from rtckit.topology import TrackPublished
from rtckit.whip.client import WhipClient
from test_whip_server import SMALL, member, running


async def test_whip_client_gathers_relay_candidates_with_the_announced_turn_credentials() -> None:
    require_executable("turnserver", hint="apt-get install coturn")
    async with (
        run_loopback_coturn() as coturn,
        running(token_auth=True) as server,
        member(server) as (_room, log),
    ):
        assert server.whip is not None
        issued: list[str] = []

        def ice_servers() -> list[dict[str, object]]:
            credentials = coturn.auth.issue(f"whip-{len(issued)}")
            issued.append(credentials.username)
            return [
                {
                    "urls": [coturn.uri()],
                    "username": credentials.username,
                    "credential": credentials.password,
                }
            ]

        server.whip.ice_servers = ice_servers
        token = server.token("publish")
        tracks = [TestPatternTrack(SMALL)]
        async with WhipClient(f"{server.base}/whip/sfu", token=token, tracks=tracks) as client:
            (announced,) = client.ice_servers
            assert announced["username"] == issued[0]  # the OPTIONS answer's credential
            assert client.pc is not None
            assert " typ relay " in client.pc.localDescription.sdp
            (publisher_id,) = server.sfu().publishers
            await log.wait_for(TrackPublished, publisher_id)
