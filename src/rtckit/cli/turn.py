"""``rtckit turn``: TURN helpers.

``rtckit turn credentials`` issues a coturn TURN REST credential (see :mod:`rtckit.ice.turn`)::

    rtckit turn credentials --secret S --user alice --ttl 3600
    rtckit turn credentials --user alice --json              # secret from $RTCKIT_TURN_SECRET
    rtckit turn credentials --user alice --uri turn:turn.example.org --relay

With ``--uri`` (repeatable) it prints the browser ``RTCConfiguration`` JSON
(``{"iceServers": [...], "iceTransportPolicy": ...}``) ready for ``new RTCPeerConnection()``.

``turn`` has its own sub-commands: to add one (e.g. ``rtckit turn serve``), write a function
``_add_<name>(turn_subparsers)`` that adds its parser and sets ``handler``, and list it in
:data:`TURN_COMMANDS`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from rtckit.cli.turn_serve import register_serve
from rtckit.errors import ConfigurationError
from rtckit.ice import ENV_TURN_SECRET, IceConfig, IceTransportPolicy
from rtckit.ice.turn import DEFAULT_TTL, TurnRestAuth, ice_server

__all__ = ["TURN_COMMANDS", "register"]


def _credentials(args: argparse.Namespace) -> int:
    secret = args.secret if args.secret is not None else os.environ.get(ENV_TURN_SECRET, "")
    if not secret:
        raise ConfigurationError(f"give --secret or set {ENV_TURN_SECRET}")
    auth = TurnRestAuth(secrets=[secret], ttl=args.ttl)
    creds = auth.issue(args.user)
    if args.uri:
        policy = IceTransportPolicy.RELAY if args.relay else IceTransportPolicy.ALL
        config = IceConfig(servers=[ice_server(args.uri, creds)], transport_policy=policy)
        print(config.to_json(indent=2))
        return 0
    if args.relay:
        raise ConfigurationError("--relay needs at least one --uri")
    expires = datetime.datetime.fromtimestamp(creds.expires_at, tz=datetime.UTC)
    if args.json:
        out: dict[str, Any] = {
            "username": creds.username,
            "password": creds.password,
            "ttl": args.ttl,
            "expires_at": creds.expires_at,
        }
        print(json.dumps(out, indent=2))
    else:
        print(f"username: {creds.username}")
        print(f"password: {creds.password}")
        print(f"expires:  {expires.isoformat()}")
    return 0


def _add_credentials(turn_subparsers: Any) -> None:
    parser = turn_subparsers.add_parser(
        "credentials",
        help="issue a time-limited TURN REST credential for coturn's use-auth-secret",
        description="Issue a TURN REST credential: username '<expiry>:<user>', password "
        "base64(HMAC-SHA1(secret, username)), as coturn's --use-auth-secret checks.",
    )
    parser.add_argument(
        "--secret",
        help=f"coturn's static-auth-secret (default: ${ENV_TURN_SECRET}; prefer the "
        "variable, command lines are visible to other users)",
    )
    parser.add_argument("--user", required=True, help="user part of the username")
    parser.add_argument(
        "--ttl",
        type=int,
        default=DEFAULT_TTL,
        help=f"lifetime in seconds (default {DEFAULT_TTL})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--uri",
        action="append",
        default=[],
        metavar="TURN_URI",
        help="a turn:/turns: URI; repeatable; prints the browser RTCConfiguration JSON",
    )
    parser.add_argument(
        "--relay",
        action="store_true",
        help='with --uri, set "iceTransportPolicy": "relay"',
    )
    parser.set_defaults(handler=_credentials)


TURN_COMMANDS: list[Callable[[Any], None]] = [_add_credentials, register_serve]
"""Functions ``(turn_subparsers) -> None`` adding the sub-commands of ``rtckit turn``."""


def _usage(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def handler(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return handler


def register(subparsers: Any) -> None:
    """Add ``rtckit turn`` and its sub-commands to the ``rtckit`` parser."""
    parser = subparsers.add_parser("turn", help="TURN: credentials for coturn, run coturn")
    turn_subparsers = parser.add_subparsers(dest="turn_command", metavar="TURN_COMMAND")
    parser.set_defaults(handler=_usage(parser))
    for add in TURN_COMMANDS:
        add(turn_subparsers)
