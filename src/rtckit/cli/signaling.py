"""``rtckit signaling`` (run a standalone signaling server) and ``rtckit token`` (mint a
development room token)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

from rtckit.cli import os_error_text
from rtckit.errors import CertificateError, ConfigurationError
from rtckit.eventloop import add_loop_argument, loop_name, run
from rtckit.httpserver import HttpLimits
from rtckit.signaling.auth import (
    ALL_PERMISSIONS,
    DEFAULT_PERMISSIONS,
    ENV_SIGNALING_SECRET,
    OpenAuth,
    TokenAuth,
)
from rtckit.signaling.config import TOPOLOGIES, RoomConfig, SignalingConfig
from rtckit.signaling.wsserver import SignalingServer

__all__ = [
    "SECRET_ENV",
    "TRANSPORT_CHOICES",
    "picows_available",
    "register",
    "resolve_transport",
    "tls_context",
]

#: The values of ``--transport``: ``auto`` (picows if installed), ``aiohttp``, ``picows``.
TRANSPORT_CHOICES: tuple[str, ...] = ("auto", "aiohttp", "picows")

#: Environment variable read when ``--secret`` is not given.
SECRET_ENV = ENV_SIGNALING_SECRET


def register(subparsers: Any) -> None:
    """Add the ``signaling`` and ``token`` sub-commands."""
    serve = subparsers.add_parser(
        "signaling",
        help="run a standalone signaling server",
        description="Run a WebSocket signaling server. Choose --secret (room tokens) or, "
        "for local demos only, --open.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port (8765; 0: any free port)")
    serve.add_argument("--path", default="/ws", help="WebSocket path (/ws)")
    mode = serve.add_mutually_exclusive_group()
    mode.add_argument(
        "--secret", help=f"HS256 secret verifying room tokens (default: ${SECRET_ENV})"
    )
    mode.add_argument(
        "--open", action="store_true", help="admit everyone without a token (demos only)"
    )
    serve.add_argument(
        "--room",
        action="append",
        default=[],
        metavar="NAME[:TOPOLOGY]",
        help="declare a room (repeatable); topology mesh, sfu or mcu",
    )
    serve.add_argument(
        "--no-create-rooms",
        action="store_true",
        help="refuse joins to rooms not declared with --room",
    )
    serve.add_argument("--max-peers", type=int, default=50, help="peers per room (50)")
    serve.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="browser origin allowed to connect (repeatable; '*' for any; default: same origin)",
    )
    _limit_argument(
        serve,
        "idle_timeout",
        "close a connection that has not sent complete request headers this long after it "
        "opened or after its last response",
    )
    tls = serve.add_argument_group(
        "TLS (wss://; PEM files, e.g. from 'rtckit cert create'; give both or neither)"
    )
    tls.add_argument(
        "--cert", type=Path, metavar="FILE", help="certificate chain, the server's first"
    )
    tls.add_argument("--key", type=Path, metavar="FILE", help="its private key (unencrypted)")
    _limit_argument(
        tls,
        "tls_handshake_timeout",
        "close a connection that has not finished its TLS handshake this long after it opened",
    )
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    serve.add_argument("--log-format", choices=("text", "json"), default="text")
    serve.add_argument(
        "--transport",
        choices=TRANSPORT_CHOICES,
        default="auto",
        help="WebSocket layer (auto by default): auto is picows if installed "
        "(pip install 'rtckit[speed]'), else aiohttp",
    )
    add_loop_argument(serve)
    serve.set_defaults(handler=_serve)

    token = subparsers.add_parser(
        "token",
        help="mint a room token for development",
        description="Print a signed room token (JWT, HS256).",
    )
    token.add_argument("--secret", help=f"signing secret (default: ${SECRET_ENV})")
    token.add_argument("--room", required=True)
    token.add_argument("--identity", required=True, help="the holder's identity (sub claim)")
    token.add_argument("--ttl", type=float, default=3600.0, help="validity in seconds (3600)")
    token.add_argument(
        "--permissions",
        nargs="+",
        default=list(DEFAULT_PERMISSIONS),
        choices=ALL_PERMISSIONS,
        help="permissions (default: publish subscribe)",
    )
    token.set_defaults(handler=_token)


def _limit_argument(parser: Any, field: str, help_text: str) -> None:
    """Add ``--FIELD SECONDS``, defaulting to :class:`~rtckit.httpserver.HttpLimits`'
    *field*."""
    default: float = getattr(HttpLimits(), field)
    parser.add_argument(
        "--" + field.replace("_", "-"),
        type=float,
        default=default,
        metavar="SECONDS",
        help=f"{help_text} ({default:g})",
    )


def picows_available() -> bool:
    """Whether the ``picows`` package can be imported."""
    return importlib.util.find_spec("picows") is not None


def resolve_transport(choice: str) -> str:
    """The WebSocket layer ``--transport`` *choice* means here: ``picows`` or ``aiohttp``.

    Raises :class:`~rtckit.errors.ConfigurationError` for ``picows`` when it is not
    installed."""
    available = picows_available()
    if choice == "auto":
        return "picows" if available else "aiohttp"
    if choice == "picows" and not available:
        raise ConfigurationError(
            "the picows WebSocket layer is not installed (pip install 'rtckit[speed]')"
        )
    if choice not in TRANSPORT_CHOICES:
        raise ConfigurationError(f"transport must be one of {TRANSPORT_CHOICES}, not {choice!r}")
    return choice


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The server TLS context of ``--cert`` and ``--key`` (``None`` without either).

    Read as :meth:`IssuedCertificate.from_files <rtckit.certs.IssuedCertificate.from_files>`
    reads them and made by :func:`~rtckit.certs.server_ssl_context` (TLS 1.2 or newer), so a
    missing or unreadable file, a key that does not belong to the certificate or an expired
    certificate is refused before the server starts, in one line
    (:class:`~rtckit.errors.ConfigurationError`)."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigurationError("--cert and --key go together: give both (wss://) or neither")
    from rtckit.certs import IssuedCertificate

    try:
        return IssuedCertificate.from_files(cert, key).server_ssl_context()
    except CertificateError as exc:
        raise ConfigurationError(f"--cert/--key: {exc}") from exc


def _secret(args: argparse.Namespace) -> str | None:
    secret: str | None = args.secret or os.environ.get(SECRET_ENV)
    return secret


def _token(args: argparse.Namespace) -> int:
    secret = _secret(args)
    if not secret:
        raise ConfigurationError(f"give --secret or set ${SECRET_ENV}")
    auth = TokenAuth(secret=secret)
    print(
        auth.mint(
            room=args.room, identity=args.identity, ttl=args.ttl, permissions=args.permissions
        )
    )
    return 0


def build_config(args: argparse.Namespace) -> SignalingConfig:
    """Return the server configuration the ``signaling`` command line describes."""
    secret = _secret(args)
    if args.open:
        auth: OpenAuth | TokenAuth = OpenAuth()
    elif secret:
        auth = TokenAuth(secret=secret)
    else:
        raise ConfigurationError(f"give --secret (or ${SECRET_ENV}), or --open for a demo")
    rooms = []
    for spec in args.room:
        name, _, topology = spec.partition(":")
        if topology and topology not in TOPOLOGIES:
            raise ConfigurationError(f"--room {spec}: topology must be one of {TOPOLOGIES}")
        rooms.append(RoomConfig(name=name, topology=topology or "mesh"))
    return SignalingConfig(
        auth=auth,
        rooms=tuple(rooms),
        create_rooms=not args.no_create_rooms,
        max_peers_per_room=args.max_peers,
        allowed_origins=tuple(args.allow_origin),
    )


async def _run(
    config: SignalingConfig,
    host: str,
    port: int,
    path: str,
    limits: HttpLimits,
    transport: str,
    context: ssl.SSLContext | None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if transport == "picows":
        from rtckit.signaling.fastws import PicowsSignalingServer

        server: SignalingServer | PicowsSignalingServer = PicowsSignalingServer(config)
    else:
        server = SignalingServer(config)
    async with server:
        try:
            await server.listen(host, port, path=path, limits=limits, ssl=context)
        except OSError as exc:
            where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
            raise ConfigurationError(f"cannot listen on {where}: {os_error_text(exc)}") from exc
        mode = "open (no tokens)" if isinstance(config.auth, OpenAuth) else "room tokens"
        print(
            f"rtckit signaling on {server.url} ({mode}, {transport}, {loop_name()} loop)",
            flush=True,
        )
        await stop.wait()
    print("rtckit signaling stopped", file=sys.stderr)


def _serve(args: argparse.Namespace) -> int:
    config = build_config(args)
    if not args.idle_timeout > 0:
        raise ConfigurationError(f"--idle-timeout must be positive, not {args.idle_timeout}")
    if not args.tls_handshake_timeout > 0:
        raise ConfigurationError(
            f"--tls-handshake-timeout must be positive, not {args.tls_handshake_timeout}"
        )
    limits = HttpLimits(
        idle_timeout=args.idle_timeout, tls_handshake_timeout=args.tls_handshake_timeout
    )
    transport = resolve_transport(args.transport)
    context = tls_context(args.cert, args.key)
    from rtckit.server.logs import configure_logging

    handler = configure_logging(args.log_level, args.log_format)
    try:
        run(
            _run(config, args.host, args.port, args.path, limits, transport, context),
            loop=args.loop,
        )
    finally:
        logging.getLogger("rtckit").removeHandler(handler)
    return 0
