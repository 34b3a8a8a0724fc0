"""The canary: two signaling clients in their own room, bouncing an ``app`` message off each
other through the server every :data:`PERIOD` seconds, in a process of their own (so that
neither the attacking code nor the GIL of the test process delays them).

``python -m hostile.canary URL PING_TOKEN ECHO_TOKEN [CA_FILE]`` prints ``ready``, then one
line per round trip: ``<time.monotonic()> <seconds, or inf if lost>``; it stops when its
standard input closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
import time

import aiohttp

from rtckit.signaling import AppMessage, SignalingClient, WebSocketTransport

ROOM = "canary"
PERIOD = 0.1
#: A round trip not back within this is lost (printed as inf).
LOST_AFTER = 2.0


async def _client(url: str, token: str, session: aiohttp.ClientSession) -> SignalingClient:
    transport = WebSocketTransport(url, session=session)
    return await SignalingClient.connect(transport, room=ROOM, token=token)


async def main(url: str, ping_token: str, echo_token: str, ca_file: str | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.run_in_executor(None, sys.stdin.read).add_done_callback(lambda _f: stop.set())
    context = ssl.create_default_context(cafile=ca_file) if ca_file else False
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        ping = await _client(url, ping_token, session)
        echo = await _client(url, echo_token, session)
        replies: asyncio.Queue[int] = asyncio.Queue()

        async def bounce() -> None:
            async for event in echo:
                if isinstance(event, AppMessage) and event.sender is not None:
                    await echo.send_app(event.sender, event.payload)

        async def collect() -> None:
            async for event in ping:
                if isinstance(event, AppMessage) and isinstance(event.payload, int):
                    replies.put_nowait(event.payload)

        tasks = [asyncio.create_task(bounce()), asyncio.create_task(collect())]
        print("ready", flush=True)
        try:
            number = 0
            while not stop.is_set():
                number += 1
                sent = time.perf_counter()
                await ping.send_app(echo.peer_id, number)
                rtt = float("inf")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LOST_AFTER):
                        while (await replies.get()) != number:
                            pass
                        rtt = time.perf_counter() - sent
                print(f"{time.monotonic()} {rtt}", flush=True)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, PERIOD - rtt)):
                        await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await ping.aclose()
            await echo.aclose()
    await asyncio.sleep(0.25)  # aiohttp's advice: let TLS transports close


if __name__ == "__main__":
    url, ping_token, echo_token, *ca_file = sys.argv[1:]
    asyncio.run(main(url, ping_token, echo_token, ca_file[0] if ca_file else None))
