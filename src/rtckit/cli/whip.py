"""``rtckit whip publish`` and ``rtckit whep play``: rtckit's WHIP and WHEP clients.

Exit status: 0 done; 1 the server cannot be reached; 2 another error (no connection, a bad
option); 3 the server refused the request (the line says its status and why); 4
``--frames N`` not reached before ``--duration`` or the end of the session.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from rtckit.errors import WhipError

__all__ = ["register"]

_EPILOG = (
    "exit status: 0 done, 1 server unreachable, 2 other error, 3 request refused by the "
    "server, 4 fewer frames than --frames"
)


def register(subparsers: Any) -> None:
    """Add the ``whip`` and ``whep`` sub-commands."""
    publish = _action(
        subparsers,
        ("whip", "publish to a WHIP endpoint (RFC 9725)"),
        ("publish", "publish a test pattern and tone, a file or a camera"),
        "Publish to the WHIP endpoint URL until --duration ends, Ctrl-C, or the server ends "
        "the session; then DELETE the session and print what was sent.",
        permission="publish",
    )
    publish.add_argument(
        "--source",
        default="test",
        help="test (pattern + 440 Hz tone, default), a media FILE, or camera:/dev/videoN",
    )
    publish.set_defaults(handler=_publish)

    play = _action(
        subparsers,
        ("whep", "play from a WHEP endpoint"),
        ("play", "receive, count frames, record without transcoding"),
        "Play the WHEP endpoint URL (audio and video, not decoded) until --frames video "
        "frames arrived, --duration ends, Ctrl-C, or the server ends the session; then "
        "DELETE the session and print what was received.",
        permission="subscribe",
    )
    play.add_argument("--frames", type=int, metavar="N", help="stop after N video frames")
    play.add_argument(
        "--record",
        metavar="FILE",
        help="write the received VP8/Opus as they are to FILE (.webm, .mkv, .ivf, .ogg)",
    )
    play.set_defaults(handler=_play)


def _action(
    subparsers: Any,
    group: tuple[str, str],
    action: tuple[str, str],
    description: str,
    *,
    permission: str,
) -> argparse.ArgumentParser:
    """The parser of ``rtckit GROUP ACTION URL [--token T] [--duration S]``."""
    name, help_text = group
    parent: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help_text, description=f"{name.upper()} client."
    )
    actions = parent.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)
    parser: argparse.ArgumentParser = actions.add_parser(
        action[0], help=action[1], description=description, epilog=_EPILOG
    )
    parser.add_argument(
        "url", metavar="URL", help=f"the {name.upper()} endpoint, e.g. http://host/{name}/room"
    )
    parser.add_argument("--token", help=f"bearer token (a room token with '{permission}')")
    parser.add_argument("--duration", type=_seconds, metavar="S", help="stop after S seconds")
    parser.set_defaults(rtckit_parser=parser)
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _run(command: str, url: str, work: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    """Run *work* until it returns or SIGINT/SIGTERM sets its stop event; a refusal is one line
    and status 3, a request without answer one line and status 1."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            return await work(stop)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    try:
        return asyncio.run(main())
    except WhipError as exc:
        print(f"rtckit {command}: refused: {exc.status} {exc.title}: {exc}", file=sys.stderr)
        return 3
    except TimeoutError:
        print(f"rtckit {command}: error: no answer from {url}", file=sys.stderr)
        return 1


async def _until(stop: asyncio.Event, ended: Awaitable[None], duration: float | None) -> None:
    """Wait for *stop*, the session's end or *duration*, whichever comes first."""
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(ended)]
    try:
        await asyncio.wait(waits, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            if wait.done() and not wait.cancelled():
                wait.exception()  # the session ended before enough frames: the counts say so
            wait.cancel()


def _kinds(counts: dict[str, int], unit: str) -> str:
    return ", ".join(f"{kind} {counts.get(kind, 0)} {unit}" for kind in ("video", "audio"))


def _publish(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from rtckit.whip.client import WhipClient, open_source

    out = out or sys.stdout

    async def work(stop: asyncio.Event) -> int:
        source = open_source(args.source)
        try:
            async with WhipClient(args.url, token=args.token, tracks=source.tracks) as client:
                print(f"rtckit whip: publishing, session {client.location}", file=out, flush=True)
                await _until(stop, client.wait_ended(), args.duration)
                stats = await client.stats()
                ended = not client.connected
        finally:
            source.close()
        print(
            f"rtckit whip: {'session ended' if ended else 'done'}; sent "
            f"{_kinds(dict(stats.frames), 'frames')}; "
            f"{sum(stats.packets.values())} packets, {sum(stats.bytes.values())} bytes",
            file=out,
            flush=True,
        )
        return 0

    return _run("whip", args.url, work)


def _play(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from rtckit.whip.client import WhepClient

    out = out or sys.stdout

    async def work(stop: asyncio.Event) -> int:
        async with WhepClient(args.url, token=args.token, record=args.record) as client:
            print(f"rtckit whep: playing, session {client.location}", file=out, flush=True)
            enough = client.wait_ended() if args.frames is None else client.wait_frames(args.frames)
            await _until(stop, enough, args.duration)
            stats = client.stats()
        line = f"rtckit whep: received {_kinds(dict(stats.frames), 'frames')}; "
        line += f"{sum(stats.bytes.values())} bytes"
        if args.record:
            line += f"; recorded {_kinds(dict(stats.recorded), 'frames')} to {args.record}"
        print(line, file=out, flush=True)
        if args.frames is not None and stats.frames.get("video", 0) < args.frames:
            print(
                f"rtckit whep: only {stats.frames.get('video', 0)} of {args.frames} video frames",
                file=sys.stderr,
            )
            return 4
        return 0

    return _run("whep", args.url, work)
