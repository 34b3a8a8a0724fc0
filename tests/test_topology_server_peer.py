"""The SFU and MCU strategies take part in their rooms the same way (one server-peer helper):
run on their own (without RoomStrategies), on a declared room with token auth, each mints its
own token, leaves when the last person does, and comes back with the next person."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from rtckit.signaling import (
    MemoryTransport,
    RoomConfig,
    SignalingClient,
    SignalingConfig,
    SignalingHub,
    TokenAuth,
)
from rtckit.topology.base import MCU_PEER_ID, SFU_PEER_ID, ServerStrategy
from rtckit.topology.sfu import sfu_strategy_factory
from test_topology_mcu import small_mcu
from test_topology_mesh import FAST

SECRET = "server-peer-test-secret-0123456789-abcdef"
TIMEOUT = 20


async def until(cond: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(TIMEOUT):
            while not cond():  # noqa: ASYNC110 - bounded by the timeout
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


@pytest.mark.parametrize(
    ("topology", "server_peer", "factory"),
    [
        ("sfu", SFU_PEER_ID, sfu_strategy_factory(session_config=FAST)),
        ("mcu", MCU_PEER_ID, small_mcu),
    ],
)
async def test_the_server_peer_leaves_an_empty_room_and_comes_back_with_the_next_person(
    topology: str, server_peer: str, factory: Callable[[Any], ServerStrategy]
) -> None:
    auth = TokenAuth(secret=SECRET)
    config = SignalingConfig(auth=auth, rooms=[RoomConfig(name="hall", topology=topology)])
    async with SignalingHub(config) as hub:

        def in_room() -> set[str]:
            return {peer.id for peer in hub.peers("hall")}

        def visit(name: str) -> contextlib.AbstractAsyncContextManager[SignalingClient]:
            return SignalingClient.connect(
                MemoryTransport(hub), room="hall", token=auth.mint(room="hall", identity=name)
            )

        strategy = factory(hub)
        async with visit("ada") as ada:
            await strategy.start_room("hall")
            await until(lambda: server_peer in ada.peers, "the server peer to join")
        # the last person left: the server peer leaves too
        await until(lambda: in_room() == set(), "the server peer to leave")
        for visitor in ("bob", "cy"):
            async with visit(visitor) as client:

                def back(client: SignalingClient = client) -> bool:
                    return server_peer in client.peers

                await until(back, "the server peer back")
            await until(lambda: in_room() == set(), "the server peer to leave again")
        await strategy.stop_room("hall")
        async with visit("dee") as dee:
            await asyncio.sleep(0.3)
            assert in_room() == {dee.peer_id}  # stopped: it does not come back
