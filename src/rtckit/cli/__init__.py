"""The ``rtckit`` command line.

Each sub-command lives in its own module under :mod:`rtckit.cli` and exposes
``register(subparsers)``, which adds its parser and sets ``handler`` to a function
``(argparse.Namespace) -> int`` (the exit status). This module only wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from rtckit import __version__
from rtckit.errors import RtcKitError

__all__ = ["build_parser", "main"]

# One line per sub-command module, in the order ``rtckit --help`` lists them.
_COMMAND_MODULES: tuple[str, ...] = (
    "rtckit.cli.cert",
    "rtckit.cli.turn",
    "rtckit.cli.stun",
    "rtckit.cli.doctor",
    "rtckit.cli.signaling",
    "rtckit.cli.demo",
    "rtckit.cli.serve",
)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for ``rtckit`` with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="rtckit", description="WebRTC applications in Python, on aiortc."
    )
    parser.add_argument("--version", action="version", version=f"rtckit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 on success)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.handler(args)
    except RtcKitError as exc:
        print(f"rtckit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
