"""What every client-side room shares (rtckit.topology._room.ClientRoom): closing is
idempotent, leaves no task, and reports RoomClosed once; a peer's bad message costs one line."""

from __future__ import annotations

import asyncio
import logging

import pytest

from rtckit.signaling import (
    MemoryTransport,
    OpenAuth,
    RoomConfig,
    SignalingClient,
    SignalingConfig,
    SignalingHub,
)
from rtckit.topology import RoomClosed, RoomEvent, join_room
from rtckit.topology._room import ClientRoom
from test_topology_mesh import FAST


@pytest.mark.parametrize("topology", ["mesh", "sfu", "mcu"])
async def test_closing_twice_reports_room_closed_once_and_leaves_no_task(
    topology: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = SignalingConfig(auth=OpenAuth(), rooms=[RoomConfig(name="r", topology=topology)])
    async with (
        SignalingHub(config) as hub,
        SignalingClient.connect(MemoryTransport(hub), room="r") as client,
        SignalingClient.connect(MemoryTransport(hub), room="r") as mallory,
    ):
        async with join_room(client, session_config=FAST) as room:
            assert isinstance(room, ClientRoom)
            with caplog.at_level(logging.WARNING):
                # a restart whose generation is not ASCII digits: in a mesh one warning line
                # and no traceback; SFU and MCU rooms take such messages from their server only
                await mallory.send_restart(client.peer_id, session="g\u00b2")
                if topology == "mesh":
                    async with asyncio.timeout(10):
                        while "dropped restart" not in caplog.text:  # noqa: ASYNC110
                            await asyncio.sleep(0.01)
                await asyncio.sleep(0.1)
            assert not any(record.exc_info for record in caplog.records)
            await room.aclose()
        await room.aclose()  # a third time: join_room closed it too
        events: list[RoomEvent] = [event async for event in room.events()]
        assert [e for e in events if isinstance(e, RoomClosed)] == [RoomClosed(reason="left")]
        reader = room._reader
        assert reader is not None
        assert reader.done()
        left = [
            t.get_name()
            for t in asyncio.all_tasks()
            if t is not asyncio.current_task() and "room" in t.get_name()
        ]
        assert left == []
