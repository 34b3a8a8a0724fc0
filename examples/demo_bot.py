"""A Python participant in an ``rtckit demo`` room: colour bars on video, and it answers chat.

Start the demo, then the bot::

    rtckit demo
    python examples/demo_bot.py https://localhost:8443 standup

It trusts the demo's local CA (``--ca``, by default the one ``rtckit demo`` made), reads the
ICE servers from ``/config.json``, joins the room over ``wss://`` as "rtckit bot", publishes a
test pattern, greets each newcomer in the chat and answers what people write, until Ctrl-C
or ``--seconds``. It uses the same room API as the page: ``join_room`` opens the room with
the topology the server chose.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from pathlib import Path

import aiohttp

from rtckit.certs import client_ssl_context, load_certificates
from rtckit.cli.demo import default_cert_dir
from rtckit.ice import IceConfig
from rtckit.peer.media import TestPatternTrack
from rtckit.peer.session import SessionConfig
from rtckit.signaling import SignalingClient, WebSocketTransport
from rtckit.topology import ParticipantJoined, ParticipantLeft, RoomDataMessage, join_room

NAME = "rtckit bot"


def chat(text: str) -> str:
    """A chat message in the room page's format."""
    return json.dumps({"type": "chat", "text": text})


async def run(base: str, room_name: str, ca_file: Path, seconds: float | None) -> None:
    ssl_context = client_ssl_context(load_certificates(ca_file))
    connector = aiohttp.TCPConnector(ssl=ssl_context)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get(f"{base}/config.json") as response:
            response.raise_for_status()
            config = await response.json()
        ice = IceConfig.from_dict(
            {key: config[key] for key in ("iceServers", "iceTransportPolicy")}
        )
        url = base.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/ws"
        transport = WebSocketTransport(url, session=http)
        metadata = {"name": NAME, "topology": "mesh"}
        async with (
            SignalingClient.connect(transport, room=room_name, metadata=metadata) as client,
            join_room(client, session_config=SessionConfig(ice=ice)) as room,
        ):
            print(f"joined {room_name!r} ({room.topology}) as {room.local_id}", flush=True)
            await room.publish(TestPatternTrack())
            names: dict[str, str] = {}
            async with asyncio.timeout(seconds):
                async for event in room.events():
                    if isinstance(event, ParticipantJoined):
                        name = str((event.metadata or {}).get("name") or event.participant_id)
                        names[event.participant_id] = name
                        print(f"{name} is here", flush=True)
                        room.send(
                            chat(f"Hello {name}, I am a Python peer."), to=event.participant_id
                        )
                    elif isinstance(event, ParticipantLeft):
                        print(f"{names.pop(event.participant_id, event.participant_id)} left")
                    elif isinstance(event, RoomDataMessage):
                        with contextlib.suppress(ValueError, AttributeError):
                            message = json.loads(event.data)
                            if message.get("type") == "chat":
                                who = names.get(event.participant_id, event.participant_id)
                                print(f"{who}: {message['text']}", flush=True)
                                room.send(chat(f"{who} said: {message['text']}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="the demo's address, e.g. https://localhost:8443")
    parser.add_argument("room", help="room name")
    parser.add_argument(
        "--ca", type=Path, default=default_cert_dir() / "ca.pem", help="CA certificate (PEM)"
    )
    parser.add_argument("--seconds", type=float, default=None, help="leave after this long")
    args = parser.parse_args()

    async def guarded() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await run(args.base.rstrip("/"), args.room, args.ca, args.seconds)
        print("left", flush=True)

    asyncio.run(guarded())


if __name__ == "__main__":
    main()
