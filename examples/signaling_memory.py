"""Two Python peers exchange messages through an in-memory signaling hub (no sockets)."""

from __future__ import annotations

import asyncio

from rtckit.signaling import (
    AppMessage,
    MemoryTransport,
    Offer,
    OpenAuth,
    SignalingClient,
    SignalingConfig,
    SignalingHub,
)


async def main() -> None:
    config = SignalingConfig(auth=OpenAuth())  # no tokens: fine in one process
    async with (
        SignalingHub(config) as hub,
        SignalingClient.connect(MemoryTransport(hub), room="lobby") as alice,
        SignalingClient.connect(MemoryTransport(hub), room="lobby") as bob,
    ):
        print("alice is", alice.peer_id, "- bob sees", list(bob.peers))

        await alice.send_offer(bob.peer_id, "v=0 (an SDP offer)")
        await bob.send_app(None, {"chat": "hi everyone"})  # None: to every other peer

        async for event in bob:
            if isinstance(event, Offer):
                print("bob got an offer from", event.sender)
                await bob.send_answer(event.sender or "", "v=0 (an SDP answer)")
                break
        async for event in alice:
            if isinstance(event, AppMessage):
                print("alice got", event.payload, "from", event.sender)
                break


if __name__ == "__main__":
    asyncio.run(main())
