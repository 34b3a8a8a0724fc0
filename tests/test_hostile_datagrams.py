"""Stray UDP datagrams cannot end a connection rtckit made: peer sessions, SFU rooms, WHIP.

aioice hands every non-STUN datagram to aiortc's DTLS transport, whatever its source. Before
``rtckit._aiortc.guard_receive``, one empty datagram, or one over 1500 bytes starting with a
byte from 128 to 191, ended the transport's receive loop and closed the connection for good.
Here real rtckit peers (made by rtckit's own code paths) each get the hostile datagrams of
:mod:`strangers` from an unrelated socket, and must keep the same connection, with media and
data still flowing.
"""

from __future__ import annotations

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

import strangers
from rtckit.peer.events import DataMessage, TrackAdded
from rtckit.peer.media import TestPatternTrack, read_frame_counter
from rtckit.testing import peer_pair
from rtckit.topology import Room, TrackPublished
from rtckit.topology.sfu import SfuRoom
from test_peer_session import FAST, SMALL, EventLog, frames
from test_topology_sfu import first_frame
from test_whip_server import member, post, running, whip_offer


async def _frames_continue(track: MediaStreamTrack, after: int) -> None:
    """*track* delivers a frame drawn after the frame numbered *after*."""
    for _ in range(100):
        if read_frame_counter(await first_frame(track)) > after:
            return
    raise AssertionError(f"no frame after {after}")


def _own(room: Room) -> RTCPeerConnection | None:
    """The member's own connection to the SFU."""
    assert isinstance(room, SfuRoom)
    return room.session.peer_connection if room.session is not None else None


async def _attack(*pcs: RTCPeerConnection | None) -> None:
    for pc in pcs:
        assert pc is not None
        await strangers.send_hostile(pc)


async def test_peer_sessions_keep_their_connection() -> None:
    async with peer_pair(FAST) as (a, b):
        log_a, log_b = EventLog(a), EventLog(b)
        a.add_track(TestPatternTrack(SMALL))
        chat = a.create_data_channel("chat")
        await a.wait_connected()
        [added] = await log_b.wait_for(TrackAdded)
        last = (await frames(added.track, 1))[0]
        pcs = (a.peer_connection, b.peer_connection)

        await _attack(*pcs)

        assert (a.peer_connection, b.peer_connection) == pcs  # not replaced by a restart
        await _frames_continue(added.track, last)
        chat.send("after")
        [message] = await log_b.wait_for(DataMessage)
        assert message == DataMessage(label="chat", data="after")
        b.send("chat", b"back")
        [reply] = await log_a.wait_for(DataMessage)
        assert reply.data == b"back"
        await log_a.aclose()
        await log_b.aclose()


async def test_sfu_members_and_their_server_peers_keep_their_connections() -> None:
    async with running() as srv, member(srv) as (alice, _), member(srv) as (bob, log):
        await alice.publish(TestPatternTrack(SMALL))
        published = await log.wait_for(TrackPublished, alice.local_id)
        last = read_frame_counter(await first_frame(published.track))
        members = srv.sfu().members

        def connections() -> list[RTCPeerConnection | None]:
            return [
                _own(alice),
                _own(bob),
                members[alice.local_id].session.peer_connection,
                members[bob.local_id].session.peer_connection,
            ]

        pcs = connections()

        await _attack(*pcs)

        await _frames_continue(published.track, last)
        assert connections() == pcs  # not replaced by a restart
        for pc in pcs:
            assert pc is not None
            strangers.assert_connected(pc)


async def test_whip_publishers_server_peer_keeps_its_connection() -> None:
    async with (
        running() as srv,
        aiohttp.ClientSession() as http,
        member(srv) as (_room, log),
    ):
        pc, offer, _ = await whip_offer()
        try:
            response = await post(http, f"{srv.base}/whip/sfu", offer)
            assert response.status == 201, await response.text()
            answer = RTCSessionDescription(sdp=await response.text(), type="answer")
            await pc.setRemoteDescription(answer)
            (publisher_id, publisher), *_ = srv.sfu().publishers.items()
            published = await log.wait_for(TrackPublished, publisher_id)
            last = read_frame_counter(await first_frame(published.track, within=30))
            server_pc = publisher._pc

            await _attack(server_pc)

            await _frames_continue(published.track, last)
            assert srv.sfu().publishers[publisher_id]._pc is server_pc
            strangers.assert_connected(server_pc)
        finally:
            await pc.close()
