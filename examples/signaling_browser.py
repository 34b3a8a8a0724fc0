"""Serve a page whose JavaScript joins the room with rtckit.js; a Python peer greets it.

Run it, open http://127.0.0.1:8080/ in two tabs, and type in the box: every tab and the
Python peer see the messages. ``--port`` serves another port (8080 is also the HTTP port of
``rtckit demo``); Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from aiohttp import web

from rtckit.signaling import (
    AppMessage,
    OpenAuth,
    PeerJoined,
    SignalingClient,
    SignalingConfig,
    SignalingServer,
)

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>rtckit chat</title>
<input id="text" placeholder="say something"> <pre id="log"></pre>
<script type="module">
  import { RtcKitSignaling } from "/ws/rtckit.js";
  const log = (line) => (document.querySelector("#log").textContent += line + "\\n");
  const sig = await RtcKitSignaling.connect(`ws://${location.host}/ws`, { room: "lobby" });
  log(`I am ${sig.peerId}; here: ${[...sig.peers.keys()].join(", ") || "nobody"}`);
  sig.addEventListener("peer-joined", (e) => log(`${e.detail.peer.id} joined`));
  sig.addEventListener("peer-left", (e) => log(`${e.detail.peer_id} left`));
  sig.addEventListener("app", (e) => log(`${e.detail.from}: ${JSON.stringify(e.detail.payload)}`));
  document.querySelector("#text").addEventListener("change", (e) => {
    sig.sendApp(null, e.target.value);  // null: to everyone else
    log(`me: ${e.target.value}`);
    e.target.value = "";
  });
</script>
"""


async def python_peer(url: str) -> None:
    async with SignalingClient.connect(url, room="lobby", peer_id=None) as peer:
        async for event in peer:
            if isinstance(event, PeerJoined):
                await peer.send_app(event.peer.id, "welcome from Python")
            elif isinstance(event, AppMessage):
                print(event.sender, "says", event.payload)


async def main(port: int = 8080) -> int:
    server = SignalingServer(SignalingConfig(auth=OpenAuth()))
    app = web.Application()

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app.router.add_get("/", index)
    server.add_routes(app, path="/ws")
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
        except OSError as exc:  # the port is taken, most often
            print(
                f"error: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}; "
                "choose another port with --port",
                file=sys.stderr,
            )
            return 1
        # Ctrl-C (or SIGTERM) stops the peer first, then the server, inside this coroutine:
        # nothing is left for asyncio.run to cancel half-way through accepting a connection.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        print(f"open http://127.0.0.1:{port}/ in two browser tabs (Ctrl-C stops)", flush=True)
        peer = asyncio.create_task(python_peer(f"ws://127.0.0.1:{port}/ws"))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({peer, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in (peer, stopping):
            task.cancel()
        await asyncio.gather(peer, stopping, return_exceptions=True)
        print("stopped", file=sys.stderr)
    finally:
        await runner.cleanup()
    return 0


def cli() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080, help="HTTP port (8080)")
    args = parser.parse_args()
    return asyncio.run(main(args.port))


if __name__ == "__main__":
    sys.exit(cli())
