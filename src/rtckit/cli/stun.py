"""``rtckit stun``: run the embedded STUN server until Ctrl-C (or SIGTERM)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any, TextIO

from rtckit.stun.codec import DEFAULT_SOFTWARE, RateLimit, format_transport_address
from rtckit.stun.server import DEFAULT_PORT, StunServer, StunServerConfig

__all__ = ["register", "run"]

_LIMIT = RateLimit()


def register(subparsers: Any) -> None:
    """Add the ``stun`` sub-command."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "stun",
        help="run a STUN server (RFC 8489 Binding, UDP and optionally TCP)",
        description=(
            "Answer STUN Binding requests with the address they came from, until Ctrl-C. "
            "Prints the addresses it listens on, and its counters when it stops."
        ),
    )
    parser.add_argument(
        "--host",
        action="append",
        metavar="IP",
        help="IP address to listen on, repeatable (default 127.0.0.1; 0.0.0.0 or :: for all)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port for UDP and TCP (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument("--tcp", action="store_true", help="listen on TCP as well as UDP")
    parser.add_argument(
        "--software",
        nargs="?",
        const=DEFAULT_SOFTWARE,
        default=None,
        metavar="TEXT",
        help=(
            f"add a SOFTWARE attribute to responses ('{DEFAULT_SOFTWARE}' if no TEXT); "
            "none by default"
        ),
    )
    parser.add_argument(
        "--no-rate-limit",
        action="store_true",
        help=(
            "answer every UDP request (default: at most "
            f"{_LIMIT.rate:g} a second per source, bursts of {_LIMIT.burst:g})"
        ),
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``rtckit stun``: serve until interrupted; exit status 0."""
    config = StunServerConfig(
        bind=[(host, args.port) for host in (args.host or ["127.0.0.1"])],
        tcp=args.tcp,
        software=args.software or None,
        udp_rate_limit=None if args.no_rate_limit else _LIMIT,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config, sys.stdout))
    return 0


async def _serve(config: StunServerConfig, out: TextIO) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = StunServer(config)
    started = False
    try:
        async with server:
            started = True
            for kind, addresses in (("udp", server.udp_addresses), ("tcp", server.tcp_addresses)):
                for host, port in addresses:
                    shown = format_transport_address(host, port)
                    print(f"rtckit stun: listening on {kind} {shown}", file=out, flush=True)
            await stop.wait()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        if started:  # else nothing was served, and the error says why
            counters = " ".join(f"{name}={value}" for name, value in server.stats.as_dict().items())
            print(f"rtckit stun: stopped; {counters}", file=out, flush=True)
