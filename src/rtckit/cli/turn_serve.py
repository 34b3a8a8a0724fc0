"""``rtckit turn serve``: run coturn with a configuration rendered by :mod:`rtckit.coturn`.

The ``turn`` command group lives in ``rtckit.cli.turn``, which calls
:func:`register_serve` with its sub-parsers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

from rtckit.coturn import CoturnConfig, CoturnProcess
from rtckit.errors import ConfigurationError
from rtckit.ice import (
    ENV_ICE_SERVERS,
    ENV_TURN_CREDENTIAL,
    ENV_TURN_SECRET,
    ENV_TURN_USERNAME,
    IceConfig,
)
from rtckit.ice.turn import TurnRestAuth

__all__ = ["SECRET_ENV", "config_from_args", "register_serve", "serve"]

SECRET_ENV = ENV_TURN_SECRET
"""Environment variable read for the REST secret when no ``--secret`` is given
(``rtckit.ice.ENV_TURN_SECRET``)."""


def register_serve(turn_subparsers: Any) -> None:
    """Add the ``serve`` sub-command to the ``rtckit turn`` group."""
    parser: argparse.ArgumentParser = turn_subparsers.add_parser(
        "serve",
        help="run coturn with a safe configuration (REST secret auth, internal peers denied)",
        description=(
            "Render a coturn configuration (TURN REST secret authentication, relaying to "
            "private, loopback, link-local and metadata addresses denied) and run turnserver "
            "with it until Ctrl-C. Needs coturn (apt-get install coturn)."
        ),
    )
    secrets = parser.add_argument_group("authentication")
    secrets.add_argument(
        "--secret",
        action="append",
        default=[],
        help=f"REST API shared secret, repeatable to rotate (else ${SECRET_ENV}); "
        "visible to local users in 'ps': prefer --secret-file or the environment",
    )
    secrets.add_argument(
        "--secret-file", type=Path, help="file with one REST secret per line (comments: #)"
    )
    secrets.add_argument("--realm", required=True, help="TURN realm, e.g. your domain")
    network = parser.add_argument_group("network")
    network.add_argument(
        "--listen",
        action="append",
        metavar="IP",
        help="address to listen on, repeatable (default 127.0.0.1)",
    )
    network.add_argument(
        "--from-env",
        action="store_true",
        help=f"serve the ICE servers ${ENV_ICE_SERVERS} lists (the URIs clients get, see "
        "rtckit.ice): listening addresses, ports and UDP/TCP/TLS listeners come from them",
    )
    network.add_argument("--port", type=int, help="UDP/TCP port (default 3478)")
    network.add_argument("--tls-port", type=int, help="TLS port (default 5349)")
    network.add_argument("--relay-ip", action="append", default=[], help="relay address")
    network.add_argument("--external-ip", help="PUBLIC or PUBLIC/PRIVATE behind a 1:1 NAT")
    network.add_argument("--min-port", type=int, default=49152, help="lowest relay port")
    network.add_argument("--max-port", type=int, default=65535, help="highest relay port")
    tls = parser.add_argument_group("TLS (PEM files, e.g. from 'rtckit cert')")
    tls.add_argument("--tls-cert", type=Path, help="certificate chain (PEM)")
    tls.add_argument("--tls-key", type=Path, help="private key (PEM, unencrypted)")
    lab = parser.add_argument_group("labs only")
    lab.add_argument(
        "--allow-loopback-peers", action="store_true", help="relay to 127.0.0.0/8 and ::1"
    )
    lab.add_argument(
        "--allow-peer",
        action="append",
        default=[],
        metavar="NETWORK",
        help="relay to this address or network despite the denied ranges, repeatable",
    )
    parser.add_argument("--turnserver", default="turnserver", help="coturn binary to run")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the turnserver.conf text (secrets included) and exit",
    )
    parser.add_argument("--verbose", action="store_true", help="show coturn's log")
    parser.set_defaults(handler=serve)


def _secrets(args: argparse.Namespace) -> list[str]:
    secrets = list(args.secret)
    if args.secret_file is not None:
        try:
            text = args.secret_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read --secret-file: {exc}") from exc
        secrets += [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]
    if not secrets and os.environ.get(SECRET_ENV):
        secrets.append(os.environ[SECRET_ENV])
    if not secrets:
        raise ConfigurationError(f"give --secret, --secret-file or ${SECRET_ENV}")
    return secrets


def config_from_args(args: argparse.Namespace) -> CoturnConfig:
    """The :class:`~rtckit.coturn.CoturnConfig` that ``rtckit turn serve`` arguments describe.

    With ``--from-env``, :meth:`~rtckit.coturn.CoturnConfig.from_ice` of
    :meth:`rtckit.ice.IceConfig.from_env` (its TURN credentials issued with the first secret),
    the options given explicitly overriding what the URIs say.
    """
    secrets = _secrets(args)
    changes: dict[str, Any] = {
        "relay_ips": args.relay_ip,
        "external_ip": args.external_ip,
        "min_port": args.min_port,
        "max_port": args.max_port,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "allow_loopback_peers": args.allow_loopback_peers,
        "allowed_peer_ips": args.allow_peer,
        "executable": args.turnserver,
    }
    given = {
        "listening_ips": args.listen,
        "listening_port": args.port,
        "tls_listening_port": args.tls_port,
    }
    changes.update({name: value for name, value in given.items() if value is not None})
    auth = TurnRestAuth(secrets=secrets)
    if not args.from_env:
        return CoturnConfig.from_ice(auth, realm=args.realm, **changes)
    environ = {
        name: value
        for name, value in os.environ.items()
        if name not in (ENV_TURN_USERNAME, ENV_TURN_CREDENTIAL)
    }
    environ[ENV_TURN_SECRET] = secrets[0]
    clients = IceConfig.from_env(environ)
    if not clients.servers:
        raise ConfigurationError(f"--from-env: ${ENV_ICE_SERVERS} lists no ICE server")
    return CoturnConfig.from_ice(clients, auth=auth, realm=args.realm, **changes)


def serve(args: argparse.Namespace) -> int:
    """Handler of ``rtckit turn serve``: 0 when stopped by Ctrl-C/SIGTERM, 1 if coturn died."""
    config = config_from_args(args)
    if args.print_config:
        sys.stdout.write(config.render())
        return 0
    status = 0
    with contextlib.suppress(KeyboardInterrupt):
        status = asyncio.run(_run(config, sys.stdout, verbose=args.verbose))
    return status


async def _run(config: CoturnConfig, out: TextIO, *, verbose: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    on_log = (lambda line: print(f"coturn: {line}", file=out, flush=True)) if verbose else None
    try:
        async with CoturnProcess(config, on_log=on_log) as turn:
            print(f"rtckit turn serve: coturn running, pid {turn.pid}", file=out, flush=True)
            for url in config.urls():
                print(f"rtckit turn serve: {url}", file=out, flush=True)
            exited = asyncio.create_task(turn.wait())
            stopped = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (exited, stopped):
                    task.cancel()
                await asyncio.gather(exited, stopped, return_exceptions=True)
            if turn.returncode is not None:
                tail = "\n".join(turn.log_tail())
                print(
                    f"rtckit turn serve: coturn exited with status {turn.returncode}:\n{tail}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        print("rtckit turn serve: stopped", file=out, flush=True)
    return 0
