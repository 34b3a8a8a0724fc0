"""``rtckit doctor``: check STUN/TURN servers and say whether a relay path is available."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from rtckit.cli import plain_text
from rtckit.errors import ConfigurationError
from rtckit.ice import IceConfig
from rtckit.ice.doctor import (
    DoctorConfig,
    DoctorServer,
    format_report,
    run_doctor,
    servers_from_ice,
    with_all_transports,
)
from rtckit.ice.turn import TurnRestAuth

__all__ = ["register"]

_EPILOG = """\
progress: a line on stderr as each probe starts and ends (not with --quiet); the table (or
the --json document) alone goes to stdout.

exit status: 0 if a relay path is available (at least one TURN URI allocated a relay that
may send to a public peer); when no TURN URI is given, 0 if at least one STUN server
answered. 1 otherwise; 2 for a usage error.

examples:
  rtckit doctor stun:stun.example.org turn:turn.example.org?transport=udp --secret S3CR3T
  rtckit doctor turns:turn.example.org:5349 --username alice --credential pw --ca-file ca.pem
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``doctor`` sub-command."""
    parser = subparsers.add_parser(
        "doctor",
        help="check STUN/TURN servers: reachability, auth, allocation, public address",
        description=plain_text(__doc__ or ""),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "uris", nargs="*", metavar="URI", help="stun:/stuns:/turn:/turns: URI (repeatable)"
    )
    parser.add_argument(
        "--ice-config",
        metavar="FILE",
        help='JSON ICE configuration ({"iceServers": [{"urls": ..., "username": ..., '
        '"credential": ...}]}), probed with its own credentials',
    )
    parser.add_argument(
        "--from-env",
        action="store_true",
        help="probe the ICE configuration of the RTCKIT_* environment variables (as "
        "rtckit.ice.IceConfig.from_env reads them), each server with its own credential",
    )
    parser.add_argument("--username", help="TURN long-term credential user name")
    parser.add_argument("--credential", help="TURN long-term credential password")
    parser.add_argument("--secret", help="TURN REST shared secret: mint a credential from it")
    parser.add_argument(
        "--user", default="rtckit-doctor", help="user part of a minted REST credential"
    )
    parser.add_argument(
        "--ttl", type=int, default=600, help="lifetime of a minted credential, seconds"
    )
    parser.add_argument("--ca-file", help="PEM CA bundle trusted for stuns:/turns:")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="bound on each server's probe, seconds"
    )
    parser.add_argument(
        "--all-transports",
        action="store_true",
        help="also probe each stun:/turn: URI over the other transport (UDP <-> TCP)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    username, credential = args.username, args.credential
    if args.secret is not None:
        if username is not None or credential is not None:
            raise ConfigurationError("give --secret or --username/--credential, not both")
        issued = TurnRestAuth(secrets=[args.secret], ttl=args.ttl).issue(args.user)
        username, credential = issued.username, issued.password
    config = DoctorConfig(
        timeout=args.timeout, username=username, credential=credential, ca_file=args.ca_file
    )

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    servers: list[DoctorServer] = [DoctorServer(uri=uri) for uri in args.uris]
    if args.ice_config is not None:
        try:
            text = Path(args.ice_config).read_text()
        except OSError as exc:
            raise ConfigurationError(f"cannot read {args.ice_config}: {exc}") from exc
        servers.extend(servers_from_ice(IceConfig.from_json(text)))
    if args.from_env:
        servers.extend(servers_from_ice(IceConfig.from_env()))
    if args.all_transports:
        servers = list(with_all_transports(servers))
    report = asyncio.run(run_doctor(servers, config, progress=progress))
    if args.json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "relay_available": report.relay_available,
                    "stun_available": report.stun_available,
                    "results": [
                        {
                            "uri": r.server.name,
                            "via": r.server.label,
                            "verdict": r.verdict,
                            "detail": r.detail,
                            "cause": r.cause,
                            "error_code": r.error_code,
                            "reflexive_address": r.reflexive_address,
                            "relayed_address": r.relayed_address,
                            "elapsed": round(r.elapsed, 4),
                        }
                        for r in report.results
                    ],
                },
                indent=2,
            )
        )
    else:
        print(format_report(report))
    return 0 if report.ok else 1
