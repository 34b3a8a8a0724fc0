"""The same two peers over a real WebSocket server on 127.0.0.1 (any free port)."""

from __future__ import annotations

import asyncio

from rtckit.signaling import (
    AppMessage,
    OpenAuth,
    SignalingClient,
    SignalingConfig,
    SignalingServer,
)


async def main() -> None:
    async with SignalingServer(SignalingConfig(auth=OpenAuth())) as server:
        await server.listen("127.0.0.1", 0)
        script = server.url.replace("ws://", "http://", 1) + "/rtckit.js"
        print("serving", server.url, "and the browser client at", script)
        async with (
            SignalingClient.connect(server.url, room="lobby") as alice,
            SignalingClient.connect(server.url, room="lobby") as bob,
        ):
            await alice.send_app(bob.peer_id, {"ping": 1})
            async for event in bob:
                if isinstance(event, AppMessage):
                    print("bob got", event.payload, "from", event.sender)
                    break


if __name__ == "__main__":
    asyncio.run(main())
