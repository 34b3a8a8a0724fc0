"""``rtckit demo``: the video-room server on this machine, with nothing to configure.

It makes (once, then reuses) a local CA and a certificate for this machine's names and LAN
addresses, serves the room page over HTTPS with open signaling, and prints the URLs and how to
trust the CA. ``rtckit serve`` (:mod:`rtckit.cli.serve`) runs the same server from a file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

from rtckit.certs import CA_DER_FILE, default_dev_hosts, ensure_dev_certificate
from rtckit.cli import os_error_text
from rtckit.errors import ConfigurationError
from rtckit.eventloop import add_loop_argument, run
from rtckit.net import lan_addresses
from rtckit.server.config import (
    TOPOLOGIES,
    AuthSettings,
    LoggingSettings,
    RoomsSettings,
    ServeConfig,
    ServerSettings,
    TlsSettings,
)

__all__ = ["default_cert_dir", "demo_config", "register", "serve_until_signal"]


def default_cert_dir() -> Path:
    """Where ``rtckit demo`` keeps its CA and certificate: ``$XDG_DATA_HOME/rtckit/demo``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "rtckit" / "demo"


def register(subparsers: Any) -> None:
    """Add the ``demo`` sub-command."""
    demo = subparsers.add_parser(
        "demo",
        help="run a video-room web app on this machine (HTTPS, no configuration)",
        description="Serve a video-room page over HTTPS with a local certificate authority "
        "made for this machine (created once, then reused), and in-memory signaling open to "
        "anyone who can reach it (no tokens: use it on networks you trust). Open the printed "
        "URL in two or more browser tabs or devices.",
    )
    demo.add_argument(
        "--host",
        default="0.0.0.0",  # noqa: S104 - phones on the LAN must reach the demo
        help="address to bind (default 0.0.0.0: this machine and the LAN)",
    )
    demo.add_argument("--port", type=int, default=8443, help="HTTPS port (8443; 0: any free)")
    demo.add_argument(
        "--http-port",
        type=int,
        default=8080,
        help="plain HTTP port answering 308 to HTTPS, and serving /ca.crt (8080; 0: any free)",
    )
    demo.add_argument(
        "--topology",
        choices=TOPOLOGIES,
        default="mesh",
        help="topology pre-selected on the page for new rooms: mesh, sfu or mcu (default mesh)",
    )
    demo.add_argument(
        "--cert-dir",
        type=Path,
        default=None,
        help=f"where the local CA and certificate live (default {default_cert_dir()})",
    )
    demo.add_argument(
        "--no-tls",
        action="store_true",
        help="plain HTTP on 127.0.0.1 only (browsers allow the camera over HTTP on localhost only)",
    )
    demo.add_argument("--verbose", action="store_true", help="log every request and event")
    add_loop_argument(demo, default="asyncio")  # uvloop opt-in: see rtckit.eventloop
    demo.set_defaults(handler=_demo)


def demo_config(
    *,
    host: str,
    port: int,
    http_port: int | None,
    topology: str,
    tls: TlsSettings | None,
    verbose: bool = False,
) -> ServeConfig:
    """The :class:`~rtckit.server.config.ServeConfig` ``rtckit demo`` runs with."""
    return ServeConfig(
        server=ServerSettings(
            host=host, port=port, http_port=http_port if tls else None, insecure=tls is None
        ),
        tls=tls,
        auth=AuthSettings(mode="open"),
        rooms=RoomsSettings(default_topology=topology),
        logging=LoggingSettings(level="debug" if verbose else "info", format="text"),
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _show(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _demo(args: argparse.Namespace) -> int:
    out = sys.stdout
    for name in ("port", "http_port"):
        value = getattr(args, name)
        if not 0 <= value <= 65535:
            raise ConfigurationError(f"--{name.replace('_', '-')} must be 0..65535, not {value}")
    from rtckit.server.app import available_topologies, topology_unavailable

    if not available_topologies().get(args.topology, False):
        raise ConfigurationError(
            f"--topology {args.topology}: {topology_unavailable(args.topology)}"
        )
    if args.no_tls:
        if not _is_loopback(args.host) and args.host != "0.0.0.0":  # noqa: S104
            raise ConfigurationError(
                "--no-tls serves on 127.0.0.1 only: browsers open the camera over plain HTTP "
                "only on localhost; drop --no-tls to serve the LAN over HTTPS"
            )
        host = args.host if _is_loopback(args.host) else "127.0.0.1"
        config = demo_config(
            host=host, port=args.port, http_port=None, topology=args.topology, tls=None
        )
        return _run_server(
            config, out, verbose=args.verbose, ca=None, banner=_plain_banner, loop=args.loop
        )

    cert_dir: Path = args.cert_dir or default_cert_dir()
    hosts = list(default_dev_hosts())
    if args.host not in ("0.0.0.0", "::") and args.host not in hosts:  # noqa: S104
        hosts.append(args.host)
    try:
        dev = ensure_dev_certificate(cert_dir, hosts)
        ca_der = (cert_dir / CA_DER_FILE).read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"--cert-dir {cert_dir}: cannot keep the demo's CA and certificate there: "
            f"{os_error_text(exc)}"
        ) from exc
    config = demo_config(
        host=args.host,
        port=args.port,
        http_port=args.http_port,
        topology=args.topology,
        tls=TlsSettings(cert=dev.files.fullchain, key=dev.files.key),
        verbose=args.verbose,
    )

    def banner(server: Any, stream: TextIO) -> None:
        _tls_banner(server, stream, args.host, dev.ca_file, created=dev.created_ca)

    return _run_server(config, out, verbose=args.verbose, ca=ca_der, banner=banner, loop=args.loop)


def _plain_banner(server: Any, out: TextIO) -> None:
    print("rtckit demo: a video room on this machine (plain HTTP, localhost only)", file=out)
    print(f"  Open {server.url(server.config.server.host)} in two or more tabs.", file=out)
    print(
        "  Without TLS browsers allow the camera on localhost only, so nothing else can join; "
        "drop --no-tls to let phones and other computers on your network in.",
        file=out,
    )
    print("  Press Ctrl-C to stop.", file=out, flush=True)


def _tls_banner(server: Any, out: TextIO, host: str, ca_file: Path, *, created: bool) -> None:
    port, http_port = server.port, server.http_port
    every = host in ("0.0.0.0", "::")  # noqa: S104
    lan = [str(a) for a in lan_addresses()] if every else ([] if _is_loopback(host) else [host])
    print("rtckit demo: a video room, served over HTTPS", file=out)
    print(f"  On this machine:  https://localhost:{port}/   (open it in two tabs to try)", file=out)
    for address in lan:
        print(f"  On your network:  https://{_show(address)}:{port}/", file=out)
    if http_port is not None:
        print(f"  Plain http://...:{http_port}/ redirects to HTTPS.", file=out)
    print(
        "  Signaling is open (no tokens): anyone who can reach this port can join a room.",
        file=out,
    )
    state = "created now" if created else "reused"
    print(f"\nThe certificate comes from a local CA made for this machine ({state}):", file=out)
    print(f"  {ca_file}", file=out)
    print("Browsers warn until they trust it. Trust it once per device:", file=out)
    print(
        "  Chrome/Chromium on Linux: certutil -d sql:$HOME/.pki/nssdb -A -t C,, "
        f'-n "rtckit demo CA" -i {ca_file}',
        file=out,
    )
    print(
        "  macOS: sudo security add-trusted-cert -d -r trustRoot "
        f"-k /Library/Keychains/System.keychain {ca_file}",
        file=out,
    )
    print(
        "  Firefox: Settings > Privacy & Security > Certificates > View Certificates > "
        "Authorities > Import",
        file=out,
    )
    if lan and http_port is not None:
        print(
            f"  Phones: open http://{_show(lan[0])}:{http_port}/ca.crt and install it "
            "(Android: Settings > Security > Encryption & credentials > Install a certificate "
            "> CA certificate; iOS: install the profile, then turn on full trust in "
            "Settings > General > About > Certificate Trust Settings).",
            file=out,
        )
    print("\nPress Ctrl-C to stop.", file=out, flush=True)


def _run_server(
    config: ServeConfig,
    out: TextIO,
    *,
    verbose: bool,
    ca: bytes | None,
    banner: Any,
    loop: str = "asyncio",
) -> int:
    from rtckit.server.logs import configure_logging

    handler = configure_logging(config.logging.level, config.logging.format)
    access = logging.getLogger("rtckit.server.access")
    previous = access.level
    if not verbose:
        access.setLevel(logging.WARNING)
    try:
        return run(serve_until_signal(config, out, demo=True, ca=ca, banner=banner), loop=loop)
    finally:
        access.setLevel(previous)
        logging.getLogger("rtckit").removeHandler(handler)


async def serve_until_signal(
    config: ServeConfig,
    out: TextIO,
    *,
    demo: bool,
    ca: bytes | None,
    banner: Any,
    reuse_port: bool = False,
    worker: int = 0,
) -> int:
    from rtckit.server.app import RtcKitServer

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[signal.Signals] = []
    draining: asyncio.Task[bool] | None = None

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum)
        stop.set()
        if signum == signal.SIGINT and draining is not None:
            draining.cancel()  # Ctrl-C stops at once, even while draining

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        async with RtcKitServer(
            config, demo=demo, ca_certificate=ca, reuse_port=reuse_port, worker=worker
        ) as server:
            if banner is not None:
                banner(server, out)
            await stop.wait()
            if received[0] == signal.SIGTERM and config.cluster is not None:
                # SIGTERM (a rolling restart): hand the rooms over to the other nodes first
                print("Draining.", file=out, flush=True)
                draining = loop.create_task(server.drain())
                await asyncio.wait({draining})  # done, timed out or cancelled by Ctrl-C
            print("Stopping.", file=out, flush=True)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
    return 0
